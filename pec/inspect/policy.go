package inspect

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Policy says which attachments the access point refuses and which it only flags.
// The zero Policy forbids nothing and flags macros and unchecked files; DefaultPolicy is
// the documented default.
type Policy struct {
	// ForbiddenExtensions are file name extensions, lower case, without the dot ("exe").
	// A name matches on its last extension, after Windows' own normalisation (trailing
	// dots and spaces dropped), and through signature and compression wrappers
	// ("setup.exe.p7m", "setup.exe.gz").
	ForbiddenExtensions []string
	// ForbiddenTypes are types recognised from the content (magic numbers), whatever the
	// name says: an .exe renamed .txt is still TypePE.
	ForbiddenTypes []Type
	// RefuseMacros refuses a message with macros or active content instead of flagging it.
	RefuseMacros bool
	// RefuseUnchecked refuses a message with a file that could not be inspected
	// (encrypted, password-protected archive, unsupported or damaged format) instead of
	// flagging it.
	RefuseUnchecked bool
}

// DefaultForbiddenExtensions is the list Aruba PEC and Poste Italiane (Postecert) publish
// for their PEC service, "in recepimento alle indicazioni AgID" (guide.pec.it, "Tipi di file
// non allegabili ad un messaggio PEC"; webmail.postecert.it): both publish the same 58
// extensions. It includes some that are not executable today (.pst, .tmp, .hlp) but that
// users of PEC already know are refused. To it we add, after the list, the executable
// formats it predates or misses: libraries and drivers a user can be tricked into loading,
// Windows app and ClickOnce packages, Java Web Start, and the disk images Windows mounts on
// a double click (a way to bring an executable past Mark-of-the-Web since 2022).
var DefaultForbiddenExtensions = []string{
	// The published list, in its order.
	"asp", "bat", "chm", "cla", "class", "cmd", "com", "cpl", "csh", "exe", "hlp", "hpj",
	"hta", "inf", "ins", "jar", "js", "jse", "lnk", "msc", "msh", "msh1", "msh1xml", "msh2",
	"msh2xml", "mshxml", "msi", "msp", "ocx", "ops", "pif", "pl", "prf", "prg", "ps1",
	"ps1xml", "ps2", "ps2xml", "psc1", "psc2", "pst", "reg", "scf", "scr", "sct", "shb",
	"shs", "tmp", "url", "vb", "vbe", "vbp", "vbs", "vsmacros", "ws", "wsc", "wsf", "wsh",
	// Ours: binaries and drivers.
	"dll", "sys", "drv", "efi", "xll", "mst",
	// Ours: Windows app packages, ClickOnce, Java Web Start, Windows settings shortcuts.
	"appx", "appxbundle", "msix", "msixbundle", "application", "appref-ms", "gadget",
	"jnlp", "settingcontent-ms",
	// Ours: disk images Windows 8+ mounts on a double click.
	"iso", "img", "vhd", "vhdx",
}

// DefaultForbiddenTypes are the executable and installable types recognised from content:
// what the extension list means, checked on the bytes so a renamed file is still caught.
var DefaultForbiddenTypes = []Type{
	TypePE, TypeDOS, TypeELF, TypeMachO, TypeJavaClass, TypeScript, TypeMSI, TypeLNK,
	TypeCHM, TypeHTA, TypeRegistry, TypeISO, TypeVHD, TypeVHDX, TypeDMG, TypeDiskImage,
}

// DefaultPolicy forbids DefaultForbiddenExtensions and DefaultForbiddenTypes, and only
// flags macros and files it could not inspect: Aruba PEC (Manuale Operativo §6.3.3) marks
// those with a header and a note to the recipient rather than refusing them.
func DefaultPolicy() Policy {
	return Policy{
		ForbiddenExtensions: slices.Clone(DefaultForbiddenExtensions),
		ForbiddenTypes:      slices.Clone(DefaultForbiddenTypes),
	}
}

// Validate reports what is wrong with p, for start-up.
func (p Policy) Validate() error {
	var errs []error
	for _, e := range p.ForbiddenExtensions {
		if !validExt(e) {
			errs = append(errs, fmt.Errorf("inspect: forbidden extension %q: write it lower case, without the dot", e))
		}
	}
	for _, t := range p.ForbiddenTypes {
		if _, ok := typeText[t]; !ok {
			errs = append(errs, fmt.Errorf("inspect: unknown forbidden type %q (known: %s)", t, strings.Join(knownTypes(), ", ")))
		}
	}
	return errors.Join(errs...)
}

func validExt(e string) bool {
	if e == "" || len(e) > 32 {
		return false
	}
	for _, c := range []byte(e) {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Limits bound the work and memory of one inspection. Hitting one is a finding that
// refuses the message (CodeTooDeep, CodeTooMany, CodeBomb), never a crash. Zero fields
// take the defaults.
type Limits struct {
	// MaxDepth is the deepest nesting of containers: multipart, message/rfc822, archive,
	// signed file, embedded object. Default 32: a PEC busta forwarded five times nests
	// about 25 levels.
	MaxDepth int
	// MaxParts is the number of MIME entities, archive members and embedded objects.
	// Default 10000.
	MaxParts int
	// MaxExpanded is the number of bytes decompression may produce in total (zip, gzip,
	// PDF object streams), counted on the bytes actually produced, whatever the archive
	// declares; an archive that declares more is refused without being expanded.
	// Transfer encodings (base64, quoted-printable) do not count: they only shrink.
	// Default 256 MiB. Peak memory is about twice the message plus this.
	MaxExpanded int64
}

// Default limits.
const (
	DefaultMaxDepth    = 32
	DefaultMaxParts    = 10000
	DefaultMaxExpanded = 256 << 20
)

// DefaultLimits returns the default limits.
func DefaultLimits() Limits {
	return Limits{MaxDepth: DefaultMaxDepth, MaxParts: DefaultMaxParts, MaxExpanded: DefaultMaxExpanded}
}

// Validate rejects negative limits; zero means default.
func (l Limits) Validate() error {
	if l.MaxDepth < 0 || l.MaxParts < 0 || l.MaxExpanded < 0 {
		return fmt.Errorf("inspect: negative limit in %+v", l)
	}
	return nil
}

func (l Limits) withDefaults() Limits {
	if l.MaxDepth == 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.MaxParts == 0 {
		l.MaxParts = DefaultMaxParts
	}
	if l.MaxExpanded == 0 {
		l.MaxExpanded = DefaultMaxExpanded
	}
	return l
}

// Inspector applies one Policy under one set of Limits. It is safe for concurrent use.
type Inspector struct {
	exts       map[string]bool
	types      map[Type]bool
	refMacro   bool
	refUncheck bool
	lim        Limits
}

// New validates p and l and returns an Inspector.
func New(p Policy, l Limits) (*Inspector, error) {
	if err := errors.Join(p.Validate(), l.Validate()); err != nil {
		return nil, err
	}
	in := &Inspector{
		exts:       make(map[string]bool, len(p.ForbiddenExtensions)),
		types:      make(map[Type]bool, len(p.ForbiddenTypes)),
		refMacro:   p.RefuseMacros,
		refUncheck: p.RefuseUnchecked,
		lim:        l.withDefaults(),
	}
	for _, e := range p.ForbiddenExtensions {
		in.exts[e] = true
	}
	for _, t := range p.ForbiddenTypes {
		in.types[t] = true
	}
	return in, nil
}
