package strictjson

import (
	"strings"
	"testing"

	"github.com/sigil-hsm/sigil/internal/errs"
)

func TestCheck(t *testing.T) {
	deep := strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth)
	for _, ok := range []string{`{}`, `{"a":[1,{"b":"\ud83d\ude00"}]}`, " {\"sub\":\"ad\u00e9min\"} ", deep, `"x"`} {
		if err := Check("doc", []byte(ok), 1<<10); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{
		"{\"sub\":\"ad\xffmin\"}", "{\"su\xffb\":1}", `{"sub":"\ud800"}`, `{"sub":"\udc00x"}`,
		`{"exp":1,"exp":2}`, `{"exp":1,"\u0065xp":2}`, `{"a":{"b":1,"b":2}}`, `[{"x":1,"x":1}]`,
		"[" + deep + "]", `{} {}`, `{}x`, ``, `   `, `{"a":`, `{'a':1}`, `{"a":01}`, `{"a":1,}`,
	} {
		if err := Check("doc", []byte(bad), 1<<10); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if err := Check("doc", []byte(`{"a":"`+strings.Repeat("x", 100)+`"}`), 50); !errs.Is(err, errs.InvalidArgument) {
		t.Errorf("over the size limit: %v", err)
	}
}

func TestObject(t *testing.T) {
	m, err := Object("claims", []byte(`{"b":1,"a":{"c":[true]}}`), 1<<10)
	if err != nil || string(Encode(m)) != `{"a":{"c":[true]},"b":1}` {
		t.Fatalf("%s %v", Encode(m), err)
	}
	for _, bad := range []string{`[]`, `null`, `"x"`, `1`} {
		if _, err := Object("claims", []byte(bad), 1<<10); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// Member names equal but for case are refused in one object (Go's
// encoding/json would take either), and only there.
func TestCaseFoldedMembers(t *testing.T) {
	for doc, ok := range map[string]bool{
		`{"a":1,"A":2}`:                           false,
		`{"address":"x","Address":"y"}`:           false,
		`{"k":{"primaryType":1,"PrimaryType":2}}`: false,
		`{"a":"A","b":"a"}`:                       true,
		`{"a":{"A":1}}`:                           true,
		`[{"a":1},{"A":1}]`:                       true,
		`{"a":[{"A":1}],"b":{"a":2}}`:             true,
	} {
		if err := Check("doc", []byte(doc), 1<<10); (err == nil) != ok {
			t.Errorf("%s: %v, want ok=%v", doc, err, ok)
		}
	}
}
