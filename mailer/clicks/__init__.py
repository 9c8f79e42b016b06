"""Click measurement: each edition's links go through `/r/<token>`, counted off the request.

`tokens` (short signed link tokens), `links` (an edition's link list and the tracked view),
`store` (the list in the database and in process memory), `fingerprint` (daily-salted hashes),
`classify` (human or filtered, and why), `recorder` (the buffer flushed off the request path),
`writer` (a batch written as clicks) and `writer_process` (the writer in a child process),
`report` (what staff see), `most_read`, `asks` and `gifts` (donations), `retention`. What is
kept, and for how long, is in docs/privacy.md.
"""
