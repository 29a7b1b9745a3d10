package pec

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/mail"
	"strings"
)

// Envelope is the SMTP envelope of a transaction. Builders never change it: the busta and
// the anomaly travel with the original MAIL FROM and RCPT TO (RFC 6109 §3.1.5).
type Envelope struct {
	MailFrom string
	Rcpts    []string
}

// PostacertEML returns the original as it goes into postacert.eml of the busta
// (pec-spec.md §3.2 #1, RFC 6109 §2.2.1): byte for byte the submitted message, except that
// the Message-ID field is replaced by <id> and X-Riferimento-Message-ID carries the client's
// Message-ID (when there was one), right after it. Any X-Riferimento-Message-ID the client
// wrote itself is dropped so it cannot forge the reference. Without a Message-ID, the new
// one is appended to the header.
func PostacertEML(orig *Original, id string) []byte {
	h := postacertHeader(orig, id)
	return append(h[:len(h):len(h)], orig.Body...)
}

// postacertHeader is the header section of PostacertEML, empty line included.
func postacertHeader(orig *Original, id string) []byte {
	var b bytes.Buffer
	b.Grow(len(orig.Raw) - len(orig.Body) + 200)
	done := false
	newFields := func() {
		b.WriteString("Message-ID: <" + id + ">\r\n")
		if orig.MessageID != "" {
			b.Write(field("X-Riferimento-Message-ID", orig.MessageID).Raw)
		}
		done = true
	}
	for _, f := range orig.Header {
		switch {
		case strings.EqualFold(f.Name, "Message-ID"):
			if !done {
				newFields()
			}
		case strings.EqualFold(f.Name, "X-Riferimento-Message-ID"):
		default:
			b.Write(f.Raw)
		}
	}
	if !done {
		newFields()
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// rawFields returns the fields of h named name, unchanged.
func rawFields(h Header, names ...string) []Field {
	var out []Field
	for _, f := range h {
		for _, n := range names {
			if strings.EqualFold(f.Name, n) {
				out = append(out, f)
			}
		}
	}
	return out
}

// perContoDi is the From of the two buste: "Per conto di: sender" <service address>
// (pec-spec.md §3.1; real Aruba traffic, not the RFC's English "On behalf of").
func perContoDi(p Identity, sender string) Field {
	return field("From", quoteDisplay("Per conto di: "+sender)+" <"+p.ServiceAddress+">")
}

// Busta builds the signed busta di trasporto (pec-spec.md §3.1 #1, §3.2 #1, §4.2)
// around orig, whose postacert.eml is PostacertEML(orig, tx.ID). ref is the time reference
// shared with the accettazione.
//
// Header fields: the original's Received and Return-Path, then Subject, X-Riferimento-
// Message-ID, Date, Message-ID, Reply-To, X-Trasporto, To and Cc (verbatim), From,
// X-TipoRicevuta (Aruba's order). Sender is not written: RFC 6109 §2.1 asks for Sender equal
// to From, real providers omit it and RFC 5322 §3.6.2 says not to write it when equal.
// X-TipoRicevuta is always written (RFC 6109 §3.1.5), with the requested type.
func (bd *Builder) Busta(ref TimeRef, tx *Transaction, orig *Original) (*Message, error) {
	p := bd.ID
	if tx.Sender == "" || len(tx.Recipients) == 0 {
		return nil, fmt.Errorf("pec: busta %s: transaction without sender or recipients", tx.ID)
	}
	hdr := rawFields(orig.Header, "Return-Path", "Received")
	hdr = append(hdr, field("Subject", tx.subjectHeader(KindBusta.Info().Prefix)))
	if tx.MsgID != "" {
		hdr = append(hdr, field("X-Riferimento-Message-ID", tx.MsgID))
	}
	hdr = append(hdr, field("Date", ref.Date()), field("Message-ID", "<"+tx.ID+">"))
	if rt := rawFields(orig.Header, "Reply-To"); len(rt) > 0 {
		hdr = append(hdr, rt...)
	} else {
		hdr = append(hdr, field("Reply-To", tx.Sender))
	}
	hdr = append(hdr, field("X-Trasporto", "posta-certificata"))
	hdr = append(hdr, rawFields(orig.Header, "To", "Cc")...)
	hdr = append(hdr, perContoDi(p, tx.Sender), field("X-TipoRicevuta", string(tx.Receipt)))
	for _, f := range tx.FlagHeaders {
		hdr = append(hdr, field(f[0], f[1]))
	}
	c := &content{
		kind:      KindBusta,
		text:      textData{kind: KindBusta, ref: ref, subject: tx.Subject, sender: tx.Sender, rcpts: tx.Recipients, id: tx.ID, notes: tx.Notes},
		daticert:  daticertFor(KindBusta, p, ref, tx),
		postacert: [][]byte{postacertHeader(orig, tx.ID), orig.Body},
	}
	c.daticert.Dati.Ricevuta = tx.Receipt
	parts, err := bd.assemble(ref, hdr, c)
	if err != nil {
		return nil, err
	}
	return &Message{Kind: KindBusta, MessageID: "<" + tx.ID + ">", Parts: parts, Daticert: c.daticert, From: tx.Sender}, nil
}

// Anomalia wraps a received message that is not a valid PEC message into a busta di
// anomalia (pec-spec.md §2.5, §3.2 #2): signed by the recipient's provider p, no daticert,
// the whole received message untouched as postacert.eml. It keeps the original Received,
// Return-Path, To, Cc and Message-ID; Date is the arrival time ref. sender is the original
// sender shown in From ("Per conto di: …"): the From address of orig, else env.MailFrom.
// reason is the error shown in the text (one line).
func (bd *Builder) Anomalia(ref TimeRef, orig *Original, env Envelope, reason string) (*Message, error) {
	p := bd.ID
	sender := orig.Sender()
	if sender == "" {
		sender = env.MailFrom
	}
	hdr := rawFields(orig.Header, "Return-Path", "Received")
	subj, _ := orig.Header.Get("Subject")
	hdr = append(hdr, field("Subject", KindAnomalia.Info().Prefix+subj), field("Date", ref.Date()))
	msgID := orig.MessageID
	if msgID != "" {
		hdr = append(hdr, rawFields(orig.Header, "Message-ID")[0])
	} else {
		// No Message-ID to keep: a deterministic one, so a re-wrap after a crash is the same.
		msgID = ReceiptMessageID(KindAnomalia, hashHex(orig.Raw), "", p.MailDomain())
		hdr = append(hdr, field("Message-ID", msgID))
	}
	if rt := rawFields(orig.Header, "Reply-To"); len(rt) > 0 {
		hdr = append(hdr, rt...)
	} else if sender != "" {
		hdr = append(hdr, field("Reply-To", sender))
	}
	hdr = append(hdr, field("X-Trasporto", "errore"))
	hdr = append(hdr, rawFields(orig.Header, "To", "Cc")...)
	hdr = append(hdr, perContoDi(p, sender))
	var rcpts []Recipient
	for _, list := range [][]*mail.Address{orig.To, orig.Cc} {
		for _, a := range list {
			rcpts = append(rcpts, Recipient{Addr: a.Address})
		}
	}
	if len(rcpts) == 0 {
		for _, r := range env.Rcpts {
			rcpts = append(rcpts, Recipient{Addr: r})
		}
	}
	c := &content{
		kind: KindAnomalia,
		text: textData{kind: KindAnomalia, ref: ref, subject: orig.Subject, sender: sender, rcpts: rcpts,
			detail: oneLine(reason)},
		postacert: [][]byte{orig.Raw},
	}
	parts, err := bd.assemble(ref, hdr, c)
	if err != nil {
		return nil, err
	}
	return &Message{Kind: KindAnomalia, MessageID: msgID, Parts: parts, From: env.MailFrom}, nil
}

func hashHex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
