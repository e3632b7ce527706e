package backendtest

const dest = "0x3535353535353535353535353535353535353535"

// TransactionJSON is an eth_signTransaction object of each type Sigil
// signs, on chain 1.
var TransactionJSON = map[string]string{
	"legacy": `{"chainId":"0x1","nonce":"0x9","to":"` + dest + `","value":"0xde0b6b3a7640000","gas":"0x5208","gasPrice":"0x4a817c800"}`,
	"2930": `{"type":"0x1","chainId":"0x1","nonce":"0x1","to":"` + dest + `","value":"0x1","gas":"0x7530","gasPrice":"0x3b9aca00",
		"accessList":[{"address":"` + dest + `","storageKeys":["0x0000000000000000000000000000000000000000000000000000000000000001"]}]}`,
	"1559": `{"chainId":"0x1","nonce":"0x2","to":"` + dest + `","value":"0x2","gas":"0x5208","maxFeePerGas":"0x77359400","maxPriorityFeePerGas":"0x3b9aca00","data":"0xa9059cbb"}`,
	"4844": `{"chainId":"0x1","nonce":"0x3","to":"` + dest + `","value":"0x0","gas":"0x5208","maxFeePerGas":"0x77359400","maxPriorityFeePerGas":"0x1",
		"maxFeePerBlobGas":"0x3b9aca00","blobVersionedHashes":["0x01ababababababababababababababababababababababababababababababab"]}`,
	"7702": `{"chainId":"0x1","nonce":"0x4","to":"` + dest + `","value":"0x0","gas":"0x186a0","maxFeePerGas":"0x77359400","maxPriorityFeePerGas":"0x1",
		"authorizationList":[{"chainId":"0x1","address":"` + dest + `","nonce":"0x0","yParity":"0x0","r":"0x1","s":"0x1"}]}`,
}

// MailTypedData is the Mail example of EIP-712, and MailDigest the digest
// the EIP publishes for it.
const (
	MailTypedData = `{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"version","type":"string"},{"name":"chainId","type":"uint256"},{"name":"verifyingContract","type":"address"}],
"Person":[{"name":"name","type":"string"},{"name":"wallet","type":"address"}],
"Mail":[{"name":"from","type":"Person"},{"name":"to","type":"Person"},{"name":"contents","type":"string"}]},
"primaryType":"Mail","domain":{"name":"Ether Mail","version":"1","chainId":1,"verifyingContract":"0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"},
"message":{"from":{"name":"Cow","wallet":"0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},"to":{"name":"Bob","wallet":"0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},"contents":"Hello, Bob!"}}`
	MailDigest = "0xbe609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
)
