// Usage: node ethers-rpc.mjs URL ADDRESS CERT KEY CA
// ethers v6's JsonRpcSigner, over mTLS, signs an EIP-1559 transaction
// (eth_signTransaction) and a message (personal_sign) through Sigil's
// JSON-RPC endpoint; ethers itself then recovers both to ADDRESS. Prints
// "ok" or exits 1 saying what failed.
import { readFileSync } from 'node:fs';
import https from 'node:https';
import { FetchRequest, JsonRpcProvider, Network, Transaction, verifyMessage } from 'ethers';

const [url, address, cert, key, ca] = process.argv.slice(2);
const req = new FetchRequest(url);
req.getUrlFunc = FetchRequest.createGetUrlFunc({
  agent: new https.Agent({ cert: readFileSync(cert), key: readFileSync(key), ca: readFileSync(ca) }),
});
const provider = new JsonRpcProvider(req, 1, { staticNetwork: Network.from(1) });
const signer = await provider.getSigner(address);

const raw = await signer.signTransaction({
  type: 2, chainId: 1, nonce: 5, to: '0x3535353535353535353535353535353535353535', value: 1000n,
  gasLimit: 21000n, maxFeePerGas: 2_000_000_000n, maxPriorityFeePerGas: 1_000_000_000n,
});
const tx = Transaction.from(raw);
if (tx.from.toLowerCase() !== address.toLowerCase() || tx.nonce !== 5 || tx.value !== 1000n) {
  console.error(`transaction: from ${tx.from}, nonce ${tx.nonce}, value ${tx.value}`);
  process.exit(1);
}
const sig = await signer.signMessage('hello from ethers');
if (verifyMessage('hello from ethers', sig).toLowerCase() !== address.toLowerCase()) {
  console.error(`message: recovers to ${verifyMessage('hello from ethers', sig)}`);
  process.exit(1);
}
console.log('ok');
