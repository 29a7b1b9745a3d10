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
func receiptHeader(k Kind, p Provider, ref TimeRef, tx *Transaction, to, rcptKey string) []Field {
	info := k.Info()
	hdr := []Field{
		field("Date", ref.Date()),
		field("Subject", tx.subjectHeader(info.Prefix)),
		field("From", p.ServiceAddress),
		field("To", to),
		field("Message-ID", ReceiptMessageID(k, tx.ID, rcptKey, p.Domain)),
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

// receipt builds any kind but the two buste.
func receipt(k Kind, p Provider, ref TimeRef, tx *Transaction, to, rcptKey string, td textData, d *daticert.Postacert, postacert []byte, s Signer, o Options) ([]byte, error) {
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
	return assemble(p, ref, receiptHeader(k, p, ref, tx, to, rcptKey), c, s, o)
}

// BuildAccettazione builds the ricevuta di accettazione to the sender (§3.2 #3), with the
// same ref as the busta.
func BuildAccettazione(p Provider, ref TimeRef, tx *Transaction, s Signer, o Options) ([]byte, error) {
	d := daticertFor(KindAccettazione, p, ref, tx)
	return receipt(KindAccettazione, p, ref, tx, tx.Sender, "", textData{}, d, nil, s, o)
}

// BuildNonAccettazione builds the avviso di non accettazione for a formal exception
// (§3.2 #4, §7.1): errore="altro", the reason in errore-esteso and in the text. The original
// is not attached (MUST NOT).
func BuildNonAccettazione(p Provider, ref TimeRef, tx *Transaction, reason *FormalError, s Signer, o Options) ([]byte, error) {
	if reason == nil {
		return nil, errors.New("pec: non-accettazione without a reason")
	}
	d := daticertFor(KindNonAccettazione, p, ref, tx)
	d.Dati.ErroreEsteso = oneLine(reason.Text())
	return receipt(KindNonAccettazione, p, ref, tx, tx.Sender, "", textData{detail: d.Dati.ErroreEsteso}, d, nil, s, o)
}

// BuildNonAccettazioneVirus builds the avviso di non accettazione per virus (§3.2 #5):
// X-VerificaSicurezza: errore, errore="virus", the virus name in errore-esteso.
func BuildNonAccettazioneVirus(p Provider, ref TimeRef, tx *Transaction, virus string, s Signer, o Options) ([]byte, error) {
	d := daticertFor(KindNonAccettazioneVirus, p, ref, tx)
	d.Dati.ErroreEsteso = virusText(virus)
	return receipt(KindNonAccettazioneVirus, p, ref, tx, tx.Sender, "", textData{detail: d.Dati.ErroreEsteso}, d, nil, s, o)
}

func virusText(virus string) string {
	v := oneLine(virus)
	if v == "" {
		v = "contenuto non identificato"
	}
	return "virus informatico rilevato: " + v
}

// BuildPresaInCarico builds the ricevuta di presa in carico of one SMTP transaction
// (§3.2 #6), to the sending provider's mailReceipt, with one ricezione per local recipient.
func BuildPresaInCarico(p Provider, ref TimeRef, tx *Transaction, mailReceipt string, ricezione []string, s Signer, o Options) ([]byte, error) {
	if len(ricezione) == 0 {
		return nil, errors.New("pec: presa in carico without recipients")
	}
	d := daticertFor(KindPresaInCarico, p, ref, tx)
	d.Dati.Ricezione = ricezione
	key := append([]string(nil), ricezione...)
	for i := range key {
		key[i] = strings.ToLower(key[i])
	}
	sort.Strings(key)
	return receipt(KindPresaInCarico, p, ref, tx, mailReceipt, strings.Join(key, ","), textData{ricezione: ricezione}, d, nil, s, o)
}

// BuildRilevazioneVirus builds the avviso di rilevazione virus for one local recipient
// (§3.2 #7), to the sending provider's mailReceipt, with X-Mittente. errore="virus" is an
// INFERENCE (pec-spec.md §5.3): the DTD comment does not list it for this tipo.
func BuildRilevazioneVirus(p Provider, ref TimeRef, tx *Transaction, mailReceipt, rcpt, virus string, s Signer, o Options) ([]byte, error) {
	d := daticertFor(KindRilevazioneVirus, p, ref, tx)
	d.Dati.Consegna = rcpt
	d.Dati.ErroreEsteso = virusText(virus)
	return receipt(KindRilevazioneVirus, p, ref, tx, mailReceipt, rcpt, textData{rcpt: rcpt, detail: d.Dati.ErroreEsteso}, d, nil, s, o)
}

// BuildMancataConsegnaVirus builds the avviso di mancata consegna per virus (§3.2 #8), sent
// by the sender's provider to the sender when a rilevazione virus arrives.
func BuildMancataConsegnaVirus(p Provider, ref TimeRef, tx *Transaction, rcpt, virus string, s Signer, o Options) ([]byte, error) {
	d := daticertFor(KindMancataConsegnaVirus, p, ref, tx)
	d.Dati.Consegna = rcpt
	d.Dati.ErroreEsteso = virusText(virus)
	return receipt(KindMancataConsegnaVirus, p, ref, tx, tx.Sender, rcpt, textData{rcpt: rcpt, detail: d.Dati.ErroreEsteso}, d, nil, s, o)
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

// BuildConsegna builds the ricevuta di avvenuta consegna for rcpt (§3.2 #9). postacert is
// the postacert.eml received in the busta. The content follows ReceiptFor(tx.Receipt, inTo):
// completa attaches postacert as is, breve with every attachment replaced by its hash
// (Breve), sintetica attaches nothing. daticert ricevuta/@tipo records the requested type,
// as the real Aruba receipt of a Cc recipient does (pec-spec.md §2.6 observation). It
// returns the kind built.
func BuildConsegna(p Provider, ref TimeRef, tx *Transaction, rcpt string, inTo bool, postacert []byte, s Signer, o Options) (Kind, []byte, error) {
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
		return k, nil, fmt.Errorf("pec: %s needs the postacert.eml of the busta", k)
	}
	d := daticertFor(k, p, ref, tx)
	d.Dati.Ricevuta = tx.Receipt
	d.Dati.Consegna = rcpt
	msg, err := receipt(k, p, ref, tx, tx.Sender, rcpt, textData{rcpt: rcpt}, d, att, s, o)
	return k, msg, err
}

// BuildMancataConsegna builds the avviso di mancata consegna for rcpt (§3.2 #10, §7.3):
// errore is no-dest, no-dominio or altro; esteso is the short description, conventionally
// "<RFC 3463 code> - <gestore> - <description>" (see DeliveryErrorText).
func BuildMancataConsegna(p Provider, ref TimeRef, tx *Transaction, rcpt string, errore daticert.Errore, esteso string, s Signer, o Options) ([]byte, error) {
	switch errore {
	case daticert.ErroreNoDest, daticert.ErroreNoDominio, daticert.ErroreAltro:
	default:
		return nil, fmt.Errorf("pec: mancata consegna with errore %q", errore)
	}
	d := daticertFor(KindMancataConsegna, p, ref, tx)
	d.Errore = errore
	d.Dati.Consegna = rcpt
	d.Dati.ErroreEsteso = oneLine(esteso)
	return receipt(KindMancataConsegna, p, ref, tx, tx.Sender, rcpt, textData{rcpt: rcpt, detail: d.Dati.ErroreEsteso}, d, nil, s, o)
}

// DeliveryErrorText formats errore-esteso the way real providers do (pec-spec.md §7.3):
// "5.1.1 - Provider A S.p.A. - indirizzo non valido".
func DeliveryErrorText(code, provider, description string) string {
	return oneLine(code + " - " + provider + " - " + description)
}

// BuildPreavviso builds the timeout notice for rcpt (§3.2 #11/#12): hours is 12 or 24. Both
// share header and subject; the text and errore-esteso tell them apart (INFERENCE,
// pec-spec.md §5.3; errore stays nessuno as in the ULib logs).
func BuildPreavviso(p Provider, ref TimeRef, tx *Transaction, rcpt string, hours int, s Signer, o Options) ([]byte, error) {
	k := KindPreavviso12h
	switch hours {
	case 12:
	case 24:
		k = KindPreavviso24h
	default:
		return nil, fmt.Errorf("pec: preavviso for %d hours", hours)
	}
	d := daticertFor(k, p, ref, tx)
	d.Dati.Consegna = rcpt
	d.Dati.ErroreEsteso = fmt.Sprintf("superamento del tempo massimo di consegna (%d ore)", hours)
	return receipt(k, p, ref, tx, tx.Sender, rcpt, textData{rcpt: rcpt}, d, nil, s, o)
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
