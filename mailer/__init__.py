"""LabourList's daily round-up mailer."""

__version__ = "0.1.0"
