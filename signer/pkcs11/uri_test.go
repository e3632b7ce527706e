package pkcs11

import (
	"bytes"
	"testing"
)

func TestParseURI(t *testing.T) {
	good := map[string]URI{
		"pkcs11:token=sigil;object=auth-jwt.g3;id=%01%02":       {Token: "sigil", Object: "auth-jwt.g3", ID: []byte{1, 2}},
		"pkcs11:object=a%20b;type=private":                      {Object: "a b"},
		"pkcs11:id=%FF;token=t;manufacturer=SoftHSM%20project":  {Token: "t", ID: []byte{0xff}},
		"pkcs11:token=My%3BToken;object=k?module-name=softhsm2": {Token: "My;Token", Object: "k"},
		"pkcs11:token=t;object=k;x-vendor-attr=ok":              {Token: "t", Object: "k"},
	}
	for in, want := range good {
		got, err := ParseURI(in)
		if err != nil || got.Token != want.Token || got.Object != want.Object || !bytes.Equal(got.ID, want.ID) {
			t.Errorf("ParseURI(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{
		"", "token=t;object=k", "pkcs11:", "pkcs11:token=t", "pkcs11:object=k;object=j",
		"pkcs11:object=%zz", "pkcs11:object", "pkcs11:object=k?pin-value=secret", "pkcs11:object=k;colour=blue",
	} {
		if _, err := ParseURI(in); err == nil {
			t.Errorf("ParseURI(%q) accepted", in)
		}
	}
}

func FuzzParseURI(f *testing.F) {
	for _, s := range []string{"pkcs11:token=sigil;object=auth-jwt.g3;id=%01%02", "pkcs11:object=a%20b", "pkcs11:id=%00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURI(s)
		if err != nil {
			return
		}
		again, err := ParseURI(u.String())
		if err != nil {
			t.Fatalf("String() of a parsed URI does not parse: %q: %v", u.String(), err)
		}
		if again.Token != u.Token || again.Object != u.Object || !bytes.Equal(again.ID, u.ID) {
			t.Fatalf("round trip changed %+v to %+v", u, again)
		}
	})
}
