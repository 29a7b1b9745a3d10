// Package inspect runs the content controls an access point applies besides the
// antivirus, as the market leader describes them (Aruba PEC, Manuale Operativo §6.3.3):
// forbidden attachment types, refused also when renamed, inside archives, or inside a
// forwarded message; macros, flagged for the recipient; files that cannot be checked
// (encrypted, password-protected), flagged too. It is pure: it reads the bytes it is given
// and does no other I/O.
//
// # Use
//
//	in, err := inspect.New(inspect.DefaultPolicy(), inspect.DefaultLimits()) // at start-up
//	rep := in.Inspect(msg)
//	switch {
//	case rep.Verdict&inspect.Refuse != 0: // avviso di non accettazione, errore-esteso rep.Reason()
//	default: // add rep.Headers() to the busta, rep.Notes() to its readable text
//	}
//
// # What is walked
//
// The MIME tree (RFC 2045, 2046), CRLF or LF, parsed leniently the way mail clients read
// it (junk header lines skipped, unterminated multiparts read to the end, base64 with junk,
// bad quoted-printable escapes kept): multipart bodies, message/rfc822 and message/global
// parts (a forwarded .eml, a PEC busta's postacert.eml; a busta is a multipart/signed and is
// walked like any multipart), S/MIME application/pkcs7-mime (signed content walked,
// enveloped flagged), and attachments named .eml or that look like a stored message.
// Every file is identified by its names (Content-Disposition filename and Content-Type
// name, RFC 2231 and 2047 decoded; both are checked, clients differ on which they show) and
// by its content (sniff.go: magic numbers, not the declared media type, which the sender
// chooses). Inside files:
//
//   - zip (archive/zip; store and deflate): every member; OOXML (docx, xlsm, ...) and
//     OpenDocument: macros and encryption; encrypted members (general purpose bit 0) are
//     not checked, but their names are.
//   - gzip and tar (compress/gzip, archive/tar): read too, because providers name .tgz
//     among the archives they look into, and both stream with the standard library.
//   - rar, 7z, cab, xz, bzip2, zstd: not opened, reported as not checked
//     (UncheckedUnsupported). The standard library has no decoder for them (bzip2's is
//     slow enough to be a denial of service), the Go ports that exist are large parsers of
//     hostile input we would have to vet and follow, RAR's own decompression code comes
//     under a licence that forbids using it to re-create the format, and the antivirus
//     (clamd) opens them all; the recipient is told we did not look inside.
//   - OLE2 compound files ([MS-CFB], ole.go): directory only, plus the few streams needed:
//     VBA storages = macros; EncryptionInfo/EncryptedPackage, Word's fEncrypted, Excel's
//     FILEPASS = encrypted; Windows Installer root CLSID = msi/msp/mst; OLE Package objects
//     (\x01Ole10Native) and embedded packages are inspected as files.
//   - PDF (pdf.go): /JavaScript, /JS and /Launch = active content (flagged like macros,
//     CodeActive); /Encrypt = not checked; embedded files inspected.
//   - CMS signed files (.p7m, CAdES; DER, BER or base64): the signed document inside.
//
// # Limits
//
// Limits bound depth, parts and the bytes decompression produces (MaxExpanded, counted on
// the bytes really produced, whatever an archive declares; an archive declaring more than
// is left is refused before expanding anything). Hitting a limit is a finding that refuses
// the message (CodeTooDeep, CodeTooMany, CodeBomb) and ends the walk. Memory: only what must
// be read whole (archives, PDF, compound files, signed files, messages) is held; other files
// are streamed through a 64 KiB head (for the magic numbers) and a 512-byte tail (for the
// VHD and DMG footers). Transfer decoding (base64, quoted-printable) only shrinks and is
// bounded by the message itself.
//
// # Policy
//
// DefaultPolicy forbids the 58 extensions Aruba PEC and Poste Italiane publish, plus a
// few executable and disk-image formats they miss (policy.go says which and why), and the
// executable types recognised from content; it flags macros and unchecked files. A refused
// message gets an avviso di non accettazione whose errore-esteso is Report.Reason(), one
// Italian line such as "allegato non consentito: documenti.zip > setup.txt (eseguibile
// Windows)". A flagged message gets our own header fields (HeaderMacro, HeaderUnchecked;
// not in any RFC nor in the PEC technical rules) and a courtesy note (NoteMacro,
// NoteUnchecked).
//
// # Not done
//
// Not examined: uuencoded, BinHex and yEnc bodies; application/ms-tnef (winmail.dat);
// Outlook .msg attachments (a compound file: its directory is read, its attachments are
// not); archives hidden after another file's end (zip polyglots); Excel 4.0 macros in .xls
// (BIFF macro sheets) and encrypted PowerPoint 97-2003 without EncryptedSummary; HTML
// smuggling; PDF filespec names (embedded files are named "file incorporato N").
package inspect
