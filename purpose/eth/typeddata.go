package eth

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/strictjson"
)

// Bounds on an EIP-712 document, beyond its size (MaxMessageBytes) and
// nesting (strictjson.MaxDepth).
const (
	MaxTypes         = 64   // struct types in "types"
	MaxFields        = 64   // fields of one struct type
	MaxArrayElements = 1024 // array elements in domain and message together
	maxArrayDims     = 4    // dimensions of one array type (T[][2][]…)
	maxIntegerChars  = 80   // an integer as a string: 2^256 has 78 digits
	maxExactJSONInt  = 1 << 53
	domainType       = "EIP712Domain"
)

// domainFields are the members EIP-712 defines for the domain, with their
// types; go-ethereum reads the domain into a struct of exactly these, so
// anything else would be dropped unseen.
var domainFields = map[string]string{
	"name": "string", "version": "string", "chainId": "uint256", "verifyingContract": "address", "salt": "bytes32",
}

var (
	typeNamePattern  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*$`)
	fieldNamePattern = regexp.MustCompile(`^[A-Za-z_$][A-Za-z0-9_$]*$`)
	fieldTypePattern = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9_]*)((?:\[[0-9]*\])*)$`)
	addressPattern   = regexp.MustCompile(`^0x[0-9a-fA-F]{40}$`)
	decimalPattern   = regexp.MustCompile(`^-?[0-9]+$`)
	hexPattern       = regexp.MustCompile(`^0[xX][0-9a-fA-F]+$`)
	jsonIntPattern   = regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`)
)

// typedDoc is an eth_signTypedData_v4 document as the checks read it:
// numbers kept as written.
type typedDoc struct {
	Types       map[string][]struct{ Name, Type string } `json:"types"`
	PrimaryType string                                   `json:"primaryType"`
	Domain      map[string]any                           `json:"domain"`
	Message     map[string]any                           `json:"message"`
}

// fieldType is a parsed field type: a base type and its array dimensions,
// outermost first (T[2][3] is 3 arrays of 2); -1 is a dynamic dimension.
type fieldType struct {
	base string
	dims []int
}

type field struct {
	name string
	typ  fieldType
}

// checkTypedData validates an EIP-712 document before go-ethereum hashes
// it, refusing what go-ethereum would accept and sign anyway: an undefined
// primaryType, integers outside their declared width (int8 = -129), array
// lengths other than declared (uint8[4294967295]), nested arrays the type
// does not declare, members a type does not declare or lacks, numbers
// float64 cannot hold exactly, names that would corrupt the encoded type,
// and documents beyond the bounds above.
func checkTypedData(doc []byte) error {
	if err := strictjson.Check("typed data", doc, MaxMessageBytes); err != nil {
		return err
	}
	var d typedDoc
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return typedErr("%v", err)
	}
	types, err := parseTypes(d.Types)
	if err != nil {
		return err
	}
	if _, ok := types[d.PrimaryType]; !ok {
		return typedErr("primaryType %q is not defined in types", d.PrimaryType)
	}
	if err := checkDomainType(types[domainType]); err != nil {
		return err
	}
	c := &valueChecker{types: types, budget: MaxArrayElements}
	if err := c.object("domain", domainType, d.Domain); err != nil {
		return err
	}
	for _, name := range []string{"name", "version"} {
		if d.Domain[name] == "" { // go-ethereum leaves an empty one out, then misses it
			return typedErr("domain.%s: empty", name)
		}
	}
	return c.object("message", d.PrimaryType, d.Message)
}

func typedErr(format string, args ...any) error {
	return errs.New(errs.InvalidArgument, "typed data: "+format, args...)
}

// parseTypes checks the struct types: bounded in number and size, named
// so that the encoded type cannot be misread, each field of an atomic type
// or a defined struct, and EIP712Domain among them.
func parseTypes(raw map[string][]struct{ Name, Type string }) (map[string][]field, error) {
	if len(raw) > MaxTypes {
		return nil, typedErr("%d types, at most %d", len(raw), MaxTypes)
	}
	if _, ok := raw[domainType]; !ok {
		return nil, typedErr("types: %s is not defined", domainType)
	}
	types := make(map[string][]field, len(raw))
	for name, fields := range raw {
		switch {
		case !typeNamePattern.MatchString(name):
			return nil, typedErr("type name %q: letters, digits and _ only", name)
		case isAtomic(name):
			return nil, typedErr("type name %q is an atomic type", name)
		case len(fields) > MaxFields:
			return nil, typedErr("type %s: %d fields, at most %d", name, len(fields), MaxFields)
		}
		for _, f := range fields {
			if !fieldNamePattern.MatchString(f.Name) {
				return nil, typedErr("type %s: field name %q: letters, digits, _ and $ only", name, f.Name)
			}
			if slices.ContainsFunc(types[name], func(g field) bool { return g.name == f.Name }) {
				return nil, typedErr("type %s: field %s appears twice", name, f.Name)
			}
			ft, err := parseFieldType(f.Type)
			if err != nil {
				return nil, typedErr("type %s, field %s: %v", name, f.Name, err)
			}
			if _, defined := raw[ft.base]; !defined && !isAtomic(ft.base) {
				return nil, typedErr("type %s, field %s: type %q is not defined", name, f.Name, ft.base)
			}
			if ft.base == name && len(ft.dims) == 0 {
				return nil, typedErr("type %s, field %s: a type cannot contain itself", name, f.Name)
			}
			types[name] = append(types[name], field{f.Name, ft})
		}
	}
	return types, nil
}

func parseFieldType(s string) (fieldType, error) {
	m := fieldTypePattern.FindStringSubmatch(s)
	if m == nil {
		return fieldType{}, fmt.Errorf("type %q is not a type name with optional [] or [N] suffixes", s)
	}
	ft := fieldType{base: m[1]}
	for _, d := range strings.Split(strings.TrimSuffix(strings.TrimPrefix(m[2], "["), "]"), "][") {
		if m[2] == "" {
			break
		}
		n := -1
		if d != "" {
			var err error
			if n, err = strconv.Atoi(d); err != nil || n < 1 || n > MaxArrayElements || d[0] == '0' {
				return fieldType{}, fmt.Errorf("type %q: array length %s (1 to %d)", s, d, MaxArrayElements)
			}
		}
		ft.dims = append(ft.dims, n)
	}
	if len(ft.dims) > maxArrayDims {
		return fieldType{}, fmt.Errorf("type %q: more than %d array dimensions", s, maxArrayDims)
	}
	slices.Reverse(ft.dims) // T[2][3]: the last suffix is the outermost
	return ft, nil
}

// checkDomainType allows only the domain fields EIP-712 defines, with
// their types, and at least one of them (go-ethereum refuses an empty
// domain).
func checkDomainType(fields []field) error {
	if len(fields) == 0 {
		return typedErr("%s declares no field", domainType)
	}
	for _, f := range fields {
		want, ok := domainFields[f.name]
		if !ok || len(f.typ.dims) > 0 || f.typ.base != want {
			return typedErr("%s field %s: the domain fields are name, version (string), chainId (uint256), verifyingContract (address) and salt (bytes32)", domainType, f.name)
		}
	}
	return nil
}

// valueChecker walks values against their types, counting array elements.
type valueChecker struct {
	types  map[string][]field
	budget int // array elements still allowed
}

// object checks that obj has exactly the fields of struct type typ.
func (c *valueChecker) object(path, typ string, obj map[string]any) error {
	fields := c.types[typ]
	for name := range obj {
		if !slices.ContainsFunc(fields, func(f field) bool { return f.name == name }) {
			return typedErr("%s: member %q is not a field of %s", path, name, typ)
		}
	}
	for _, f := range fields {
		v, ok := obj[f.name]
		if !ok {
			return typedErr("%s: field %s of %s is missing", path, f.name, typ)
		}
		if err := c.value(path+"."+f.name, f.typ, v); err != nil {
			return err
		}
	}
	return nil
}

func (c *valueChecker) value(path string, t fieldType, v any) error {
	if len(t.dims) > 0 {
		arr, ok := v.([]any)
		if !ok {
			return typedErr("%s: must be an array", path)
		}
		if n := t.dims[0]; n >= 0 && len(arr) != n {
			return typedErr("%s: %d elements, the type says %d", path, len(arr), n)
		}
		if c.budget -= len(arr); c.budget < 0 {
			return typedErr("more than %d array elements in all", MaxArrayElements)
		}
		inner := fieldType{base: t.base, dims: t.dims[1:]}
		for i, e := range arr {
			if err := c.value(fmt.Sprintf("%s[%d]", path, i), inner, e); err != nil {
				return err
			}
		}
		return nil
	}
	if _, ok := c.types[t.base]; ok {
		obj, ok := v.(map[string]any)
		if !ok {
			return typedErr("%s: must be an object of type %s", path, t.base)
		}
		return c.object(path, t.base, obj)
	}
	if err := checkAtomic(t.base, v); err != nil {
		return typedErr("%s: %v", path, err)
	}
	return nil
}

// isAtomic reports whether typ is an EIP-712 atomic type (go-ethereum
// also takes int and uint for int256 and uint256).
func isAtomic(typ string) bool {
	switch typ {
	case "address", "bool", "string", "bytes", "int", "uint":
		return true
	}
	if n, ok := width(typ, "bytes"); ok {
		return n >= 1 && n <= 32
	}
	n, ok := intWidth(typ)
	return ok && n >= 8 && n <= 256 && n%8 == 0
}

// width parses the number after prefix in typ ("bytes32" → 32).
func width(typ, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(typ, prefix)
	if !ok || rest == "" || rest[0] == '0' {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	return n, err == nil
}

// intWidth is the width of intN or uintN; int and uint are 256.
func intWidth(typ string) (int, bool) {
	if typ == "int" || typ == "uint" {
		return 256, true
	}
	if n, ok := width(typ, "uint"); ok {
		return n, true
	}
	return width(typ, "int")
}

// checkAtomic checks a value of an atomic type as go-ethereum will read it.
func checkAtomic(typ string, v any) error {
	s, isString := v.(string)
	switch {
	case typ == "bool":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("must be true or false")
		}
	case typ == "string":
		if !isString {
			return fmt.Errorf("must be a string")
		}
	case typ == "address":
		if !isString || !addressPattern.MatchString(s) {
			return fmt.Errorf("must be an address, 0x and 40 hex digits")
		}
	case strings.HasPrefix(typ, "bytes"):
		b, err := hexutil.Decode(s)
		if n, fixed := width(typ, "bytes"); !isString || err != nil || (fixed && len(b) != n) {
			return fmt.Errorf("must be 0x-prefixed hex of %s", typ)
		}
	default:
		return checkInteger(typ, v)
	}
	return nil
}

// checkInteger checks that v, a JSON integer float64 holds exactly or a
// decimal or 0x-hex string, fits intN or uintN.
func checkInteger(typ string, v any) error {
	n, _ := intWidth(typ)
	x, ok := new(big.Int), false
	switch v := v.(type) {
	case json.Number:
		if jsonIntPattern.MatchString(string(v)) {
			x, ok = x.SetString(string(v), 10)
			ok = ok && x.CmpAbs(big.NewInt(maxExactJSONInt)) <= 0
		}
		if !ok {
			return fmt.Errorf("%s: as a JSON number, an integer of at most 2^53; send larger ones as strings", v)
		}
	case string:
		switch {
		case len(v) > maxIntegerChars:
		case hexPattern.MatchString(v):
			x, ok = x.SetString(v[2:], 16)
		case decimalPattern.MatchString(v):
			x, ok = x.SetString(v, 10)
		}
		if !ok {
			return fmt.Errorf("%q is not a decimal or 0x-hex integer", v)
		}
	default:
		return fmt.Errorf("must be an integer")
	}
	lo, hi := big.NewInt(0), new(big.Int).Lsh(big.NewInt(1), uint(n)) // [lo, hi)
	if strings.HasPrefix(typ, "int") {
		hi.Rsh(hi, 1)
		lo.Neg(hi)
	}
	if x.Cmp(lo) < 0 || x.Cmp(hi) >= 0 {
		return fmt.Errorf("%s does not fit %s", x, typ)
	}
	return nil
}
