"""Delivery status reports (RFC 3464) in the shapes the common MTAs send them.

Each builder wraps the headers (or the whole) of a message we sent, as that MTA returns it:
Postfix returns the headers as text/rfc822-headers, Exim and Gmail the message as
message/rfc822, Exchange Online the message as message/rfc822 after an HTML notice.
"""

from __future__ import annotations

CRLF = "\r\n"


def _lines(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", CRLF).encode("utf-8")


def _headers_of(original: bytes) -> str:
    return original.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")


def postfix(original: bytes, recipient: str, *, status: str = "5.1.1",
            action: str = "failed", report_id: str = "<20261127070102.4F2A1C0123@relay>",
            diagnostic: str = "550 5.1.1 <{r}>: Recipient address rejected: User unknown",
            original_recipient: str | None = None) -> bytes:
    diagnostic = diagnostic.format(r=recipient)
    subject = ("Undelivered Mail Returned to Sender" if action == "failed"
               else "Delayed Mail (still being retried)")
    original_line = (f"Original-Recipient: rfc822;{original_recipient}\n"
                     if original_recipient else "")
    return _lines(f"""Return-Path: <>
Received: by relay.labourlist.org (Postfix)
	id 4F2A1C0123; Fri, 27 Nov 2026 07:01:02 +0000 (GMT)
Date: Fri, 27 Nov 2026 07:01:02 +0000 (GMT)
From: MAILER-DAEMON@relay.labourlist.org (Mail Delivery System)
Subject: {subject}
To: bounces@labourlist.org
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="4F2A1C0123.1764226862/relay.labourlist.org"
Content-Transfer-Encoding: 8bit
Message-Id: {report_id}

This is a MIME-encapsulated message.

--4F2A1C0123.1764226862/relay.labourlist.org
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

This is the mail system at host relay.labourlist.org.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

<{recipient}>: host mx.example.net[203.0.113.5] said: {diagnostic} (in reply
    to RCPT TO command)

--4F2A1C0123.1764226862/relay.labourlist.org
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.labourlist.org
X-Postfix-Queue-ID: 4F2A1C0123
X-Postfix-Sender: rfc822; bounces@labourlist.org
Arrival-Date: Fri, 27 Nov 2026 07:00:58 +0000 (GMT)

Final-Recipient: rfc822; {recipient}
{original_line}Action: {action}
Status: {status}
Remote-MTA: dns; mx.example.net
Diagnostic-Code: smtp; {diagnostic}

--4F2A1C0123.1764226862/relay.labourlist.org
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers
Content-Transfer-Encoding: 8bit

{_headers_of(original)}

--4F2A1C0123.1764226862/relay.labourlist.org--
""")


def exim(original: bytes, recipient: str, *, status: str = "5.0.0",
         diagnostic: str = "550 No such user here") -> bytes:
    return _lines(f"""Return-path: <>
Received: from Debian-exim by mx2.example.com with local (Exim 4.96)
	id 1tGq2X-000abc-3D
	for bounces@labourlist.org; Fri, 27 Nov 2026 07:02:11 +0000
X-Failed-Recipients: {recipient}
Auto-Submitted: auto-replied
From: Mail Delivery System <Mailer-Daemon@mx2.example.com>
To: bounces@labourlist.org
Content-Type: multipart/report; report-type=delivery-status; boundary=1764226931-eximdsn-1804289383
MIME-Version: 1.0
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1tGq2X-000abc-3D@mx2.example.com>
Date: Fri, 27 Nov 2026 07:02:11 +0000

--1764226931-eximdsn-1804289383
Content-type: text/plain; charset=us-ascii

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  {recipient}
    host mx.example.com [198.51.100.7]
    SMTP error from remote mail server after RCPT TO:<{recipient}>:
    {diagnostic}

--1764226931-eximdsn-1804289383
Content-type: message/delivery-status

Reporting-MTA: dns; mx2.example.com

Action: failed
Final-Recipient: rfc822;{recipient}
Status: {status}
Remote-MTA: dns; mx.example.com
Diagnostic-Code: smtp; {diagnostic}

--1764226931-eximdsn-1804289383
Content-type: message/rfc822

{original.decode("utf-8", "replace")}
--1764226931-eximdsn-1804289383--
""")


def gmail(original: bytes, recipient: str) -> bytes:
    return _lines(f"""Return-Path: <>
Received: by 2002:a05:6a10:9e8c:0:0:0:0 with SMTP id x12csp3456789pxb;
        Fri, 27 Nov 2026 07:03:40 -0800 (PST)
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: bounces@labourlist.org
Auto-Submitted: auto-replied
Subject: Delivery Status Notification (Failure)
Message-ID: <6748b2ec.050a0220.1f3a9b.0002.GMR@mx.google.com>
Date: Fri, 27 Nov 2026 07:03:40 -0800 (PST)
MIME-Version: 1.0
Content-Type: multipart/report; boundary="000000000000a1b2c3d4e5f60718"; report-type=delivery-status

--000000000000a1b2c3d4e5f60718
Content-Type: multipart/related; boundary="000000000000a1b2c3d4e5f60719"

--000000000000a1b2c3d4e5f60719
Content-Type: multipart/alternative; boundary="000000000000a1b2c3d4e5f6071a"

--000000000000a1b2c3d4e5f6071a
Content-Type: text/plain; charset="UTF-8"


** Address not found **

Your message wasn't delivered to {recipient} because the address couldn't be found,
or is unable to receive mail.

--000000000000a1b2c3d4e5f6071a
Content-Type: text/html; charset="UTF-8"

<html><body><h1>Address not found</h1></body></html>

--000000000000a1b2c3d4e5f6071a--
--000000000000a1b2c3d4e5f60719--
--000000000000a1b2c3d4e5f60718
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Received-From-MTA: dns; relay.labourlist.org
Arrival-Date: Fri, 27 Nov 2026 07:03:39 -0800 (PST)
X-Original-Message-ID: <placeholder>

Final-Recipient: rfc822; {recipient}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; The email account that you tried to reach does not exist. Please try
 double-checking the recipient's email address for typos or unnecessary spaces.
 For more information, go to https://support.google.com/mail/?p=NoSuchUser
 a640c23a62f3a-aa5b1c2d3e4sor1234567.66 - gsmtp
Last-Attempt-Date: Fri, 27 Nov 2026 07:03:40 -0800 (PST)

--000000000000a1b2c3d4e5f60718
Content-Type: message/rfc822

{original.decode("utf-8", "replace")}
--000000000000a1b2c3d4e5f60718--
""")


def exchange(original: bytes, recipient: str) -> bytes:
    return _lines(f"""From: postmaster@outlook.com
To: <bounces@labourlist.org>
Date: Fri, 27 Nov 2026 07:04:12 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="cb3b9f3a-5f4b-4bd2-9c3c-0a1b2c3d4e5f"
X-MS-Exchange-Message-Is-Ndr:
Content-Language: en-GB
Message-ID: <a1b2c3d4-e5f6-4a5b-8c9d-0e1f2a3b4c5d@DB9PR01MB1234.eurprd01.prod.exchangelabs.com>
In-Reply-To: <placeholder>
Subject: Undeliverable: LabourList Daily
Auto-Submitted: auto-replied

--cb3b9f3a-5f4b-4bd2-9c3c-0a1b2c3d4e5f
Content-Type: multipart/alternative; differences=Content-Type;
	boundary="e2c0d3f4-1a2b-4c3d-9e8f-7a6b5c4d3e2f"

--e2c0d3f4-1a2b-4c3d-9e8f-7a6b5c4d3e2f
Content-Type: text/plain; charset="us-ascii"

Your message to {recipient} couldn't be delivered.
{recipient.split("@")[0]} wasn't found at {recipient.split("@")[1]}.

--e2c0d3f4-1a2b-4c3d-9e8f-7a6b5c4d3e2f--

--cb3b9f3a-5f4b-4bd2-9c3c-0a1b2c3d4e5f
Content-Type: message/delivery-status

Reporting-MTA: dns;DB9PR01MB1234.eurprd01.prod.exchangelabs.com
Received-From-MTA: dns;relay.labourlist.org
Arrival-Date: Fri, 27 Nov 2026 07:04:10 +0000

Final-Recipient: rfc822;{recipient}
Action: failed
Status: 5.1.10
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP
 address lookup

--cb3b9f3a-5f4b-4bd2-9c3c-0a1b2c3d4e5f
Content-Type: message/rfc822

{original.decode("utf-8", "replace")}
--cb3b9f3a-5f4b-4bd2-9c3c-0a1b2c3d4e5f--
""")


def out_of_office(original_message_id: str) -> bytes:
    return _lines(f"""From: Ann Active <ann@example.org>
To: bounces@labourlist.org
Subject: Automatic reply: LabourList Daily
Auto-Submitted: auto-replied
In-Reply-To: {original_message_id}
Message-ID: <ooo-1@example.org>
Content-Type: text/plain; charset=utf-8

I am away until Monday.
""")


# ---- bounces that are not reports (they reach us only through VERP) -------------------------
def qmail(original: bytes, recipient: str, to: str, *, reason: str = (
        "Sorry, no mailbox here by that name. (#5.1.1)"),
          message_id: str = "<20261127070501.31337.qmail@mx.example.net>") -> bytes:
    """qmail-send's plain-text bounce: the reason, then a copy of the message in the text."""
    return _lines(f"""Return-Path: <>
Delivered-To: {to}
Date: 27 Nov 2026 07:05:01 -0000
From: MAILER-DAEMON@mx.example.net
To: {to}
Subject: failure notice
Message-ID: {message_id}

Hi. This is the qmail-send program at mx.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<{recipient}>:
{reason}

--- Below this line is a copy of the message.

{original.decode("utf-8", "replace")}
""")


def exim_text(recipient: str, to: str, *, reply: str = "550 User unknown",
              temporary: bool = False) -> bytes:
    """An old Exim's plain-text bounce (or delay warning), no headers returned; only the
    Envelope-To its local delivery added says where it went."""
    subject = ("Warning: message delayed" if temporary
               else "Mail delivery failed: returning message to sender")
    first = ("This message was created automatically by mail delivery software.\n\n"
             + ("A message that you sent has not yet been delivered to one or more of its\n"
                "recipients after more than 24 hours on the queue on mx.example.net.\n"
                if temporary else
                "A message that you sent could not be delivered to one or more of its\n"
                "recipients. This is a permanent error. The following address(es) failed:\n"))
    return _lines(f"""Return-Path: <>
Envelope-To: {to}
From: Mail Delivery System <Mailer-Daemon@mx.example.net>
To: LabourList Daily <daily@labourlist.org>
Subject: {subject}
Message-Id: <E1vOr3x-0004Qw-Ab@mx.example.net>

{first}
  {recipient}
    SMTP error from remote mail server after RCPT TO:<{recipient}>:
    {reply}
""")


def vacation(to: str) -> bytes:
    """An out-of-office reply sent, as RFC 3834 asks, to the envelope sender."""
    return _lines(f"""Return-Path: <>
Delivered-To: {to}
From: Ann Active <ann@example.org>
To: {to}
Subject: Out of Office: LabourList Daily
Auto-Submitted: auto-replied
X-Autoreply: yes
Message-ID: <ooo-2@example.org>
Content-Type: text/plain; charset=utf-8

I am away until Monday and will reply to 550 emails when I am back.
""")
