"""Hostile inputs as a suite: every door of a running cloud, probed as a stranger would.

One cloud (`raftcloud up`: a storage group, a frontend, smtpd, imapd, the balancer
and the supervisor's control API) is started per session (``conftest.py``), and
each probe is one test id.  Every probe proves three things:

(a) a clear refusal in the door's own protocol, asserted in the test itself:
    an HTTP 4xx with a message, an SMTP 4xx/5xx reply code, an IMAP BAD, NO or
    BYE that says why, the store's
    ProtocolError frame, or a closed connection where the protocol has no error
    (before the store's handshake, the Raft port);
(b) the door still answers an ordinary request afterwards: each module's
    autouse ``still_answering`` fixture;
(c) nothing stored or lost: the autouse ``nothing_stored_or_lost`` fixture
    compares, before and after each probe, the signed-in victim's drive row
    (their file) and mailbox row (their mail), the outbound queue, a canary
    cell, and the pid of every process the supervisor runs.

The doors, one module each:

* ``test_http_pages.py``: malformed CSRF tokens on login, signup and logout
  (non-ASCII, invalid UTF-8, huge, empty, NUL); hostile ``next`` targets
  (tab, CR/LF, ``//host``, backslash, absolute, ``javascript:``) end on our
  own pages; invalid percent-encoding and UTF-8 in paths; traversal in file
  ids, folder ids and static paths; methods a page does not take; oversized
  headers, cookies, header counts and request lines; a foreign Host header;
  a script in ``next`` shown escaped; 40 slow request heads.
* ``test_multipart.py``: uploads without a boundary, not multipart,
  truncated, unterminated, with a 2 MiB part header or 10 000 parts, with
  ``../``, ``..``, NUL or control characters in the file name, a traversal
  folder id, no CSRF field, a broken chunked body, an anonymous 64 MiB body
  (refused before it is read); a script in a file name shown escaped.
* ``test_smtp_inbound.py``: unknown commands, a 2 MiB line, DATA without MAIL
  or RCPT, MAIL before EHLO, unknown users, relaying, NUL and malformed
  addresses, SIZE and real bodies over the limit, too many recipients, a
  pipelined message after a refused RCPT.
* ``test_smtp_submission.py``: AUTH and MAIL before STARTTLS, MAIL before
  AUTH, malformed AUTH (bad base64, truncated, no separators, LOGIN garbage),
  unknown mechanisms, a wrong password, someone else's MAIL FROM, unknown
  recipients, many wrong passwords on one connection (421), the right
  password refused at an address that has been guessing (but not elsewhere),
  and web login guesses that count against SMTP AUTH (one shared limiter).
* ``test_imap.py``: literals claiming gigabytes (synchronizing: BAD before a
  byte is read; LITERAL+: BAD and BYE), big literals in other commands,
  unbalanced parentheses and quotes, 10 000 nested lists, 5 000 NOTs, invalid
  modified UTF-7 names (an unclosed ``&``, bad base64, encoded ASCII, raw
  UTF-8, NUL; as atoms, strings and literals) which make no folder, an
  overlong and an endless line, a drip-fed line, a silent client before
  login, 21 connections from one address, garbage before login.
* ``test_dav.py``: the WebDAV door at ``/dav/``: traversal in every form in the
  path and the Destination (``..``, ``%2e%2e``, ``%2f``, ``%5c``, overlong UTF-8,
  NUL), a PROPFIND and a PROPPATCH body with a billion-laughs entity, a PUT
  claiming 100 GB, control characters in names (PUT, MKCOL, MOVE), no or broken
  Basic credentials, 10 MB PROPFIND bodies (announced and chunked), infinite
  depth, unknown methods, LOCKs asking for a year or forever.
* ``test_mime.py``: scripts and event handlers in HTML mail, scripts in
  subjects (plain and encoded words), malformed MIME, a 1 MB header line,
  bare LF, NUL, an attachment named ``../``: stored as received, shown inert.
* ``test_store_client_port.py``: random bytes, a crafted pickle, an HTTP
  request and a wrong HMAC before the handshake; gigabyte and over-cap
  lengths, malformed msgpack and an empty frame after it; unknown, missing and
  ill-typed operations and traversal in blob names; a client with the wrong
  secret.
* ``test_raft_port.py``: random bytes, crafted pickles (bare and framed),
  negative and zero lengths, a token under the wrong key, a gigabyte header
  followed by a flood (cut off before 16 MiB); the leader keeps its term.
* ``test_control_api.py``: no token, a wrong token, another scheme, non-ASCII
  and empty tokens, unknown paths, a traversal to ``/shutdown``, unknown
  processes and verbs, a bad method, a 1 GiB body, a 70 kB header.
* ``test_balancer.py``: bad methods, request lines and versions, huge and too
  many headers, a 100 kB request line; traversal, ``//host``, backslash,
  absolute-form, CR/LF and ``@host`` targets all redirect to our frontend.

``test_scanner.py`` adds an off-the-shelf scanner (wapiti) against the same
cloud, signed in as a throwaway account; its docstring lists what it may report.
"""
