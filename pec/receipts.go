package pec

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/gestore-pec/gestore/pec/daticert"
)

// receiptHeader writes the header of a ricevuta or avviso (pec-spec.md §3.2 #3–#12): Date,
// Subject, From (the service address, which is the certificate's SAN), To, the
// deterministic Message-ID, X-Riferimento-Message-ID, X-Ricevuta and the kind's extras.
// The envelope sender of receipts is p.ServiceAddress (real Aruba traffic).
func receiptHeader(k Kind, p Identity, ref TimeRef, tx *Transaction, to, rcptKey string) []Field {
	info := k.Info()
	hdr := []Field{
		field("Date", ref.Date()),
		field("Subject", tx.subjectHeader(info.Prefix)),
		field("From", p.ServiceAddress),
		field("To", to),
		field("Message-ID", ReceiptMessageID(k, tx.ID, rcptKey, p.MailDomain())),
	}
	if tx.MsgID != "" {
		hdr = append(hdr, field("X-Riferimento-Message-ID", tx.MsgID))
	}
	hdr = append(hdr, field("X-Ricevuta", info.Value))
	if info.Sicurezza {
		hdr = append(hdr, field("X-VerificaSicurezza", "errore"))
	}
	if info.XMittente {
		hdr = append(hdr, field("X-Mittente", tx.Sender))
	}
	return hdr
}

func checkTx(k Kind, tx *Transaction) error {
	if tx == nil || tx.ID == "" || tx.Sender == "" || len(tx.Recipients) == 0 {
		return fmt.Errorf("pec: %s: transaction needs identificativo, sender and recipients", k)
	}
	return nil
}

// receipt builds any kind but the two buste. rcpt is the recipient a per-recipient receipt
// is about; rcptKey keys its Message-ID (rcpt, or the sorted ricezione of a presa in carico).
func (bd *Builder) receipt(k Kind, ref TimeRef, tx *Transaction, to, rcpt, rcptKey string, td textData, d *daticert.Postacert, postacert []byte) (*Message, error) {
	p := bd.ID
	if err := checkTx(k, tx); err != nil {
		return nil, err
	}
	if to == "" {
		return nil, fmt.Errorf("pec: %s: no To address", k)
	}
	td.kind, td.ref, td.subject, td.sender, td.rcpts, td.id, td.provider = k, ref, tx.Subject, tx.Sender, tx.Recipients, tx.ID, p.Name
	c := &content{kind: k, text: td, daticert: d}
	if postacert != nil {
		c.postacert = [][]byte{postacert}
	}
	parts, err := bd.assemble(ref, receiptHeader(k, p, ref, tx, to, rcptKey), c)
	if err != nil {
		return nil, err
	}
	return &Message{Kind: k, MessageID: ReceiptMessageID(k, tx.ID, rcptKey, p.MailDomain()), Parts: parts, Daticert: d,
		From: p.ServiceAddress, To: []string{to}, Rcpt: rcpt}, nil
}

// Accettazione builds the ricevuta di accettazione to the sender (§3.2 #3), with the
// same ref as the busta.
func (bd *Builder) Accettazione(ref TimeRef, tx *Transaction) (*Message, error) {
	d := daticertFor(KindAccettazione, bd.ID, ref, tx)
	return bd.receipt(KindAccettazione, ref, tx, tx.Sender, "", "", textData{}, d, nil)
}

// NonAccettazione builds the avviso di non accettazione for a formal exception
// (§3.2 #4, §7.1): errore="altro", the reason in errore-esteso and in the text. The original
// is not attached (MUST NOT).
func (bd *Builder) NonAccettazione(ref TimeRef, tx *Transaction, reason *FormalError) (*Message, error) {
	if reason == nil {
		return nil, errors.New("pec: non-accettazione without a reason")
	}
	d := daticertFor(KindNonAccettazione, bd.ID, ref, tx)
	d.Dati.ErroreEsteso = oneLine(reason.Text())
	return bd.receipt(KindNonAccettazione, ref, tx, tx.Sender, "", "", textData{detail: d.Dati.ErroreEsteso}, d, nil)
}

// NonAccettazioneVirus builds the avviso di non accettazione per virus (§3.2 #5):
// X-VerificaSicurezza: errore, errore="virus", the virus name in errore-esteso.
func (bd *Builder) NonAccettazioneVirus(ref TimeRef, tx *Transaction, virus string) (*Message, error) {
	d := daticertFor(KindNonAccettazioneVirus, bd.ID, ref, tx)
	d.Dati.ErroreEsteso = virusText(virus)
	return bd.receipt(KindNonAccettazioneVirus, ref, tx, tx.Sender, "", "", textData{detail: d.Dati.ErroreEsteso}, d, nil)
}

func virusText(virus string) string {
	v := oneLine(virus)
	if v == "" {
		v = "contenuto non identificato"
	}
	return "virus informatico rilevato: " + v
}

// PresaInCarico builds the ricevuta di presa in carico of one SMTP transaction
// (§3.2 #6), to the sending provider's mailReceipt, with one ricezione per local recipient.
func (bd *Builder) PresaInCarico(ref TimeRef, tx *Transaction, mailReceipt string, ricezione []string) (*Message, error) {
	if len(ricezione) == 0 {
		return nil, errors.New("pec: presa in carico without recipients")
	}
	d := daticertFor(KindPresaInCarico, bd.ID, ref, tx)
	d.Dati.Ricezione = ricezione
	key := append([]string(nil), ricezione...)
	for i := range key {
		key[i] = strings.ToLower(key[i])
	}
	sort.Strings(key)
	return bd.receipt(KindPresaInCarico, ref, tx, mailReceipt, "", strings.Join(key, ","), textData{ricezione: ricezione}, d, nil)
}

// RilevazioneVirus builds the avviso di rilevazione virus for one local recipient
// (§3.2 #7), to the sending provider's mailReceipt, with X-Mittente. errore="virus" is an
// INFERENCE (pec-spec.md §5.3): the DTD comment does not list it for this tipo.
func (bd *Builder) RilevazioneVirus(ref TimeRef, tx *Transaction, mailReceipt, rcpt, virus string) (*Message, error) {
	d := daticertFor(KindRilevazioneVirus, bd.ID, ref, tx)
	d.Dati.Consegna = rcpt
	d.Dati.ErroreEsteso = virusText(virus)
	return bd.receipt(KindRilevazioneVirus, ref, tx, mailReceipt, rcpt, rcpt, textData{rcpt: rcpt, detail: d.Dati.ErroreEsteso}, d, nil)
}

// MancataConsegnaVirus builds the avviso di mancata consegna per virus (§3.2 #8), sent
// by the sender's provider to the sender when a rilevazione virus arrives.
func (bd *Builder) MancataConsegnaVirus(ref TimeRef, tx *Transaction, rcpt, virus string) (*Message, error) {
	d := daticertFor(KindMancataConsegnaVirus, bd.ID, ref, tx)
	d.Dati.Consegna = rcpt
	d.Dati.ErroreEsteso = virusText(virus)
	return bd.receipt(KindMancataConsegnaVirus, ref, tx, tx.Sender, rcpt, rcpt, textData{rcpt: rcpt, detail: d.Dati.ErroreEsteso}, d, nil)
}

// ReceiptFor is the avvenuta consegna a recipient gets (RFC 6109 §3.3.2.1–3, pec-spec.md
// §2.6): sintetica if requested; Cc recipients get sintetica when completa or breve was
// requested; To recipients (and ambiguous ones: pass inTo=true) get what was requested.
func ReceiptFor(requested daticert.ReceiptType, inTo bool) daticert.ReceiptType {
	switch {
	case requested == daticert.Sintetica, !inTo:
		return daticert.Sintetica
	case requested == daticert.Breve:
		return daticert.Breve
	}
	return daticert.Completa
}

// Consegna builds the ricevuta di avvenuta consegna for rcpt (§3.2 #9). postacert is
// the postacert.eml received in the busta. The content follows ReceiptFor(tx.Receipt, inTo):
// completa attaches postacert as is, breve with every attachment replaced by its hash
// (Breve), sintetica attaches nothing. daticert ricevuta/@tipo records the requested type,
// as the real Aruba receipt of a Cc recipient does (pec-spec.md §2.6 observation). The
// Message's Kind says which variant was built.
func (bd *Builder) Consegna(ref TimeRef, tx *Transaction, rcpt string, inTo bool, postacert []byte) (*Message, error) {
	eff := ReceiptFor(tx.Receipt, inTo)
	k := KindConsegnaCompleta
	var att []byte
	switch eff {
	case daticert.Completa:
		att = ToCRLF(postacert)
	case daticert.Breve:
		k = KindConsegnaBreve
		att = Breve(ToCRLF(postacert))
	case daticert.Sintetica:
		k = KindConsegnaSintetica
	}
	if att != nil && len(att) == 0 {
		return nil, fmt.Errorf("pec: %s needs the postacert.eml of the busta", k)
	}
	d := daticertFor(k, bd.ID, ref, tx)
	d.Dati.Ricevuta = tx.Receipt
	d.Dati.Consegna = rcpt
	return bd.receipt(k, ref, tx, tx.Sender, rcpt, rcpt, textData{rcpt: rcpt}, d, att)
}

// MancataConsegna builds the avviso di mancata consegna for rcpt (§3.2 #10, §7.3):
// errore is no-dest, no-dominio or altro; esteso is the short description, conventionally
// "<RFC 3463 code> - <gestore> - <description>" (see DeliveryErrorText).
func (bd *Builder) MancataConsegna(ref TimeRef, tx *Transaction, rcpt string, errore daticert.Errore, esteso string) (*Message, error) {
	switch errore {
	case daticert.ErroreNoDest, daticert.ErroreNoDominio, daticert.ErroreAltro:
	default:
		return nil, fmt.Errorf("pec: mancata consegna with errore %q", errore)
	}
	d := daticertFor(KindMancataConsegna, bd.ID, ref, tx)
	d.Errore = errore
	d.Dati.Consegna = rcpt
	d.Dati.ErroreEsteso = oneLine(esteso)
	return bd.receipt(KindMancataConsegna, ref, tx, tx.Sender, rcpt, rcpt, textData{rcpt: rcpt, detail: d.Dati.ErroreEsteso}, d, nil)
}

// DeliveryErrorText formats errore-esteso the way real providers do (pec-spec.md §7.3):
// "5.1.1 - Provider A S.p.A. - indirizzo non valido".
func DeliveryErrorText(code, provider, description string) string {
	return oneLine(code + " - " + provider + " - " + description)
}

// Preavviso builds the timeout notice for rcpt (§3.2 #11/#12): hours is 12 or 24. Both
// share header and subject; the text and errore-esteso tell them apart (INFERENCE,
// pec-spec.md §5.3; errore stays nessuno as in the ULib logs).
func (bd *Builder) Preavviso(ref TimeRef, tx *Transaction, rcpt string, hours int) (*Message, error) {
	k := KindPreavviso12h
	switch hours {
	case 12:
	case 24:
		k = KindPreavviso24h
	default:
		return nil, fmt.Errorf("pec: preavviso for %d hours", hours)
	}
	d := daticertFor(k, bd.ID, ref, tx)
	d.Dati.Consegna = rcpt
	// Issue 12 item 15: a status code in errore-esteso, as for the mancata consegna (§7.3), so
	// that clients telling the final notice from the first by code can: 4.4.7 (delivery time
	// expired, still pending) for the 12 h preavviso, 5.4.7 (given up) for the 24 h notice
	// (RFC 3463 §3.5).
	code := "4.4.7"
	if hours == 24 {
		code = "5.4.7"
	}
	d.Dati.ErroreEsteso = DeliveryErrorText(code, bd.ID.Name, fmt.Sprintf("superamento del tempo massimo di consegna (%d ore)", hours))
	return bd.receipt(k, ref, tx, tx.Sender, rcpt, rcpt, textData{rcpt: rcpt}, d, nil)
}

// RecipientInTo tells whether rcpt is a To recipient of the original carried in the busta's
// postacert.eml, for ReceiptFor. A recipient found only in Cc is not; one in To, in both,
// or in neither (ambiguous) is, as RFC 6109 §3.3.2.3 asks (pec-spec.md §2.6).
func RecipientInTo(postacert []byte, rcpt string) bool {
	o, err := ParseOriginal(postacert)
	if err != nil {
		return true
	}
	return inList(rcpt, o.To) || !inList(rcpt, o.Cc)
}
