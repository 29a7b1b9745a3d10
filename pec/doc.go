// Package pec is the PEC engine's message core: the message model, the identificativo and
// time reference, the builders of all twelve system messages of pec-spec.md §3.1, the formal
// checks of a submission (§7.1), and Classify, which recognises and checks any incoming
// message (§7.2). The access point (submit*.go) and the other points build on it.
//
// # API shape
//
// A Provider describes the emitting gestore; a TimeRef is the one instant of a processing
// step (DM art. 9), rendered in Europe/Rome; a Transaction carries what every message about
// one identificativo repeats (sender, To/Cc recipients with their type, subject, original
// Message-ID, requested receipt type). The access point makes it from the submitted
// Original (NewSubmissionTransaction); the reception and delivery points rebuild it from the
// received daticert (TransactionFrom). Builders (BuildBusta, BuildAnomalia,
// BuildAccettazione, BuildNonAccettazione, BuildNonAccettazioneVirus, BuildPresaInCarico,
// BuildRilevazioneVirus, BuildMancataConsegnaVirus, BuildConsegna, BuildMancataConsegna,
// BuildPreavviso) take those plus a Signer (same shape as hsm.Keyring) and Options (CMS
// digest, boundary, optional HTML) and return the complete signed message, RFC 5322 with
// CRLF, ready for the outbox. Nothing here does I/O besides calling the Signer.
//
// # Decisions (where the spec leaves a choice)
//
//   - Identificativo: <YYYYMMDDhhmmss UTC>.<node>.<80 random bits base32>@<domain>; unique
//     without counters, so restarts and several nodes need no shared state (NewIdentificativo).
//   - Receipt Message-IDs are derived from identificativo, kind and recipient
//     (ReceiptMessageID): a resend after a crash carries the same Message-ID.
//   - From vs MAIL FROM: domain case-insensitive, local part exact; MAIL FROM vs SASL login:
//     case-insensitive (SameMailbox, CheckSubmission).
//   - postacert.eml is the original byte for byte (Message-ID replaced, X-Riferimento-
//     Message-ID added). Originals with 8-bit octets travel as Content-Transfer-Encoding
//     8bit (binary when they hold NUL), the only choices message/rfc822 allows (RFC 2046
//     §5.2.1). Postfix must run with disable_mime_output_conversion = yes, or a relay to a
//     peer without 8BITMIME re-encodes the part and breaks the signature. Bare LF/CR are
//     turned into CRLF (SMTP cannot carry them anyway).
//   - Readable text: our own Italian wording; text/plain quoted-printable in ISO-8859-1 when
//     the text fits (RFC 6109 §4.3.1), UTF-8 otherwise; text/html alternative behind
//     Options.HTML, with no references and no active content.
//   - Breve: SHA-1, 40 lowercase hex digits, over the part body octets exactly as they
//     appear (the encoded form); see Breve.
//   - Avvenuta consegna: the content follows the To/Cc rule (ReceiptFor), daticert ricevuta
//     records the requested type, as real Aruba receipts do.
//   - Control characters in daticert text become U+FFFD (see daticert.Marshal).
//   - Classify severities: Error for what breaks the rules; Warning for deviations real
//     providers show daily (busta without X-TipoRicevuta, gestore-emittente spelled
//     differently from the certificate, DigitPA-era certificate profiles).
package pec
