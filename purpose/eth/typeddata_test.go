package eth

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/signer/core/apitypes"

	"github.com/sigil-hsm/sigil/internal/errs"
)

const order = `{"types":{
 "EIP712Domain":[{"name":"name","type":"string"},{"name":"chainId","type":"uint256"},{"name":"salt","type":"bytes32"}],
 "Order":[{"name":"owner","type":"address"},{"name":"n","type":"int8"},{"name":"amounts","type":"uint8[2]"},{"name":"grid","type":"uint16[2][]"},
  {"name":"tag","type":"bytes4"},{"name":"memo","type":"string"},{"name":"ok","type":"bool"},{"name":"subs","type":"Sub[]"},{"name":"blob","type":"bytes"}],
 "Sub":[{"name":"v","type":"uint256"},{"name":"w","type":"int"}]},
 "primaryType":"Order",
 "domain":{"name":"d","chainId":1,"salt":"0x0000000000000000000000000000000000000000000000000000000000000001"},
 "message":{"owner":"0x3535353535353535353535353535353535353535","n":-128,"amounts":[1,255],"grid":[[1,2],[3,4],[5,65535]],
  "tag":"0x01020304","memo":"caf\u00e9","ok":true,"blob":"0x",
  "subs":[{"v":"0x10","w":"-5"},{"v":"115792089237316195423570985008687907853269984665640564039457584007913129639935","w":9007199254740992}]}}`

// mutate replaces the first old in the order document with new.
func mutate(old, new string) string {
	if !strings.Contains(order, old) {
		panic("mutate: " + old)
	}
	return strings.Replace(order, old, new, 1)
}

func TestTypedDataChecks(t *testing.T) {
	if err := checkTypedData([]byte(order)); err != nil {
		t.Fatalf("a sound document: %v", err)
	}
	if _, _, err := hashTypedData([]byte(order)); err != nil {
		t.Fatalf("go-ethereum does not hash the sound document: %v", err)
	}
	manyTypes := `"Sub":[{"name":"v","type":"uint256"},{"name":"w","type":"int"}]`
	for i := range MaxTypes {
		manyTypes += `,"T` + strings.Repeat("x", i) + `":[]`
	}
	for name, doc := range map[string]string{
		"undefined primaryType":       mutate(`"primaryType":"Order"`, `"primaryType":"Nothing"`),
		"empty primaryType":           mutate(`"primaryType":"Order"`, `"primaryType":""`),
		"int8 = -129":                 mutate(`"n":-128`, `"n":-129`),
		"int8 = 128":                  mutate(`"n":-128`, `"n":"128"`),
		"uint8 = 256":                 mutate(`"amounts":[1,255]`, `"amounts":[1,256]`),
		"uint8 = -1":                  mutate(`"amounts":[1,255]`, `"amounts":[-1,255]`),
		"uint16 = 65536":              mutate(`65535`, `65536`),
		"uint256 = 2^256":             mutate(`"0x10"`, `"0x1`+strings.Repeat("0", 64)+`"`),
		"uint8[4294967295]":           mutate(`"type":"uint8[2]"`, `"type":"uint8[4294967295]"`),
		"uint8[0]":                    mutate(`"type":"uint8[2]"`, `"type":"uint8[0]"`),
		"fixed array too short":       mutate(`"amounts":[1,255]`, `"amounts":[1]`),
		"inner fixed array too long":  mutate(`[3,4]`, `[3,4,5]`),
		"array where a scalar is":     mutate(`"amounts":[1,255]`, `"amounts":[[1],[2]]`),
		"scalar where an array is":    mutate(`[[1,2],[3,4],[5,65535]]`, `[1,2]`),
		"null in an array":            mutate(`"amounts":[1,255]`, `"amounts":[null,255]`),
		"five dimensions":             mutate(`"type":"uint16[2][]"`, `"type":"uint16[][][][][]"`),
		"unknown referenced type":     mutate(`"type":"Sub[]"`, `"type":"Sup[]"`),
		"type that contains itself":   mutate(`{"name":"w","type":"int"}`, `{"name":"w","type":"Sub"}`),
		"type named like an atomic":   mutate(`"Sub":[`, `"address":[],"Sub":[`),
		"type name with a paren":      mutate(`"Sub":[`, `"Sub(uint256 x)":[],"Sub":[`),
		"field name with a comma":     mutate(`{"name":"memo","type":"string"}`, `{"name":"memo,string x","type":"string"}`),
		"field twice":                 mutate(`{"name":"ok","type":"bool"}`, `{"name":"ok","type":"bool"},{"name":"ok","type":"bool"}`),
		"missing field":               mutate(`"ok":true,`, ``),
		"undeclared member":           mutate(`"ok":true,`, `"ok":true,"extra":1,`),
		"undeclared domain member":    mutate(`"name":"d",`, `"name":"d","foo":"bar",`),
		"non-standard domain field":   mutate(`{"name":"name","type":"string"}`, `{"name":"name","type":"bytes32"}`),
		"no EIP712Domain":             strings.Replace(mutate(`"EIP712Domain"`, `"Domain"`), `"primaryType":"Order"`, `"primaryType":"Order"`, 1),
		"number beyond 2^53":          mutate(`9007199254740992`, `9007199254740993`),
		"fractional number":           mutate(`"n":-128`, `"n":-1.0`),
		"exponent":                    mutate(`"n":-128`, `"n":1e2`),
		"empty integer string":        mutate(`"w":"-5"`, `"w":""`),
		"negative hex":                mutate(`"w":"-5"`, `"w":"-0x5"`),
		"plus sign":                   mutate(`"w":"-5"`, `"w":"+5"`),
		"long integer string":         mutate(`"w":"-5"`, `"w":"`+strings.Repeat("0", 100)+`5"`),
		"bool as string":              mutate(`"ok":true`, `"ok":"true"`),
		"address without 0x":          mutate(`"owner":"0x3535`, `"owner":"3535`),
		"short address":               mutate(`"owner":"0x3535353535353535353535353535353535353535"`, `"owner":"0x35"`),
		"bytes4 of 3":                 mutate(`"tag":"0x01020304"`, `"tag":"0x010203"`),
		"odd hex":                     mutate(`"blob":"0x"`, `"blob":"0x1"`),
		"invalid UTF-8":               mutate(`caf\u00e9`, "caf\xe9"),
		"lone surrogate":              mutate(`caf\u00e9`, `caf\ud800`),
		"duplicate member":            mutate(`"ok":true,`, `"ok":true,"ok":false,`),
		"unknown top-level member":    mutate(`"primaryType"`, `"extra":1,"primaryType"`),
		"too many types":              mutate(`"Sub":[{"name":"v","type":"uint256"},{"name":"w","type":"int"}]`, manyTypes),
		"too many array elements":     mutate(`"blob":"0x"`, `"blob":"0x","grid2":[`+strings.Repeat("[1,2],", MaxArrayElements/2)+`[1,2]]`),
		"nesting bomb":                mutate(`"memo":"caf\u00e9"`, `"memo":`+strings.Repeat("[", 40)+strings.Repeat("]", 40)),
		"over the size limit":         mutate(`"blob":"0x"`, `"blob":"0x`+strings.Repeat("00", MaxMessageBytes/2)+`"`),
		"message not an object":       `{"types":{"EIP712Domain":[]},"primaryType":"EIP712Domain","domain":{},"message":[]}`,
		"struct where a scalar is":    mutate(`"ok":true`, `"ok":{}`),
		"chainId beyond 2^53 as a nr": mutate(`"chainId":1`, `"chainId":90071992547409930`),
	} {
		if name == "too many array elements" {
			doc = strings.Replace(doc, `{"name":"blob","type":"bytes"}`, `{"name":"blob","type":"bytes"},{"name":"grid2","type":"uint8[2][]"}`, 1)
		}
		if err := checkTypedData([]byte(doc)); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzCheckTypedData: checkTypedData refuses with InvalidArgument or
// accepts a document go-ethereum then hashes without error: the checks
// never let through what go-ethereum would stumble on.
func FuzzCheckTypedData(f *testing.F) {
	f.Add([]byte(order))
	f.Add([]byte(mutate(`"n":-128`, `"n":-129`)))
	f.Add([]byte(`{"types":{"EIP712Domain":[{"name":"name","type":"string"}],"M":[{"name":"a","type":"string"}]},"primaryType":"M","domain":{"name":"d"},"message":{"a":"b"}}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		if err := checkTypedData(doc); err != nil {
			if !errs.Is(err, errs.InvalidArgument) {
				t.Fatalf("kind %v: %v", errs.KindOf(err), err)
			}
			return
		}
		var td apitypes.TypedData
		if err := json.Unmarshal(doc, &td); err != nil {
			t.Fatalf("accepted, but go-ethereum does not parse it: %v", err)
		}
		if _, _, err := apitypes.TypedDataAndHash(td); err != nil {
			t.Fatalf("accepted, but go-ethereum does not hash it: %v", err)
		}
	})
}
