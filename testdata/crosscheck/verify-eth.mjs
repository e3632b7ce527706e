// Usage: node verify-eth.mjs INPUT.json
// INPUT: {"txs": ["0x02f8…"], "messages": [{"message": "text", "signature": "0x…"}],
//         "typed": [{"document": {…eth_signTypedData_v4…}, "signature": "0x…"}]}
// Prints what ethers recovers: {"txs": [{"from", "hash", "type", "chainId"}], "messages": [addr], "typed": [addr]}.
import { Transaction, verifyMessage, verifyTypedData } from 'ethers';
import { readFileSync } from 'node:fs';

const input = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const out = {
  txs: (input.txs ?? []).map((raw) => {
    const tx = Transaction.from(raw);
    return { from: tx.from, hash: tx.hash, type: tx.type, chainId: tx.chainId.toString() };
  }),
  messages: (input.messages ?? []).map((m) => verifyMessage(m.message, m.signature)),
  typed: (input.typed ?? []).map((t) => {
    const { EIP712Domain, ...types } = t.document.types;
    return verifyTypedData(t.document.domain, types, t.document.message, t.signature);
  }),
};
console.log(JSON.stringify(out));
