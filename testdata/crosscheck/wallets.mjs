// Usage: node wallets.mjs LIB URL ADDRESS CERT KEY CA TOKEN_JSON
// Popular Ethereum libraries, pointed at Sigil's JSON-RPC endpoint (with a
// node behind it) as if it were the node: no custom transport, no network
// given by hand; the client certificate is the only setting. Each sends
// through eth_sendTransaction and waits for the receipt; LIB is viem
// (sendTransaction, deployContract + writeContract of an ERC-20), ethers
// (JsonRpcProvider + getSigner().sendTransaction) or web3 (eth.sendTransaction
// and personal.sign with a password). Prints one JSON line of transaction
// hashes, or exits 1 saying what failed.
import { readFileSync } from 'node:fs';
import https from 'node:https';
import { Agent } from 'undici';

const [lib, url, address, certFile, keyFile, caFile, tokenFile] = process.argv.slice(2);
const tls = { cert: readFileSync(certFile), key: readFileSync(keyFile), ca: readFileSync(caFile) };
const token = JSON.parse(readFileSync(tokenFile, 'utf8'));
const to = '0x3535353535353535353535353535353535353535';
const fail = (msg) => { console.error(msg); process.exit(1); };

async function viem() {
  const { createWalletClient, createPublicClient, http, parseEther } = await import('viem');
  const transport = http(url, { fetchOptions: { dispatcher: new Agent({ connect: tls }) } });
  const wallet = createWalletClient({ account: address, transport });
  const pub = createPublicClient({ transport });
  const chainId = await pub.getChainId();
  const chain = { id: chainId, name: 'node', nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 }, rpcUrls: { default: { http: [url] } } };
  const send = await wallet.sendTransaction({ chain, to, value: parseEther('0.01') });
  const r1 = await pub.waitForTransactionReceipt({ hash: send });
  const deploy = await wallet.deployContract({ chain, abi: token.abi, bytecode: token.bytecode, args: [1000000n, 'Sigil Test', 0, 'SGT'] });
  const r2 = await pub.waitForTransactionReceipt({ hash: deploy });
  const write = await wallet.writeContract({ chain, address: r2.contractAddress, abi: token.abi, functionName: 'transfer', args: [to, 250n] });
  const r3 = await pub.waitForTransactionReceipt({ hash: write });
  const bal = await pub.readContract({ address: r2.contractAddress, abi: token.abi, functionName: 'balanceOf', args: [to] });
  if (bal !== 250n) fail(`viem: balance ${bal}`);
  return [r1, r2, r3].map((r) => ({ hash: r.transactionHash, from: r.from, status: r.status }));
}

async function ethers() {
  const { FetchRequest, JsonRpcProvider, parseEther } = await import('ethers');
  const req = new FetchRequest(url);
  req.getUrlFunc = FetchRequest.createGetUrlFunc({ agent: new https.Agent(tls) });
  const provider = new JsonRpcProvider(req);
  const signer = await provider.getSigner(address);
  const tx = await signer.sendTransaction({ to, value: parseEther('0.01') });
  const r = await tx.wait();
  return [{ hash: r.hash, from: r.from, status: r.status === 1 ? 'success' : 'reverted' }];
}

async function web3() {
  const { Web3 } = await import('web3');
  const w3 = new Web3(new Web3.providers.HttpProvider(url, { providerOptions: { agent: new https.Agent(tls) } }));
  const r = await w3.eth.sendTransaction({ from: address, to, value: w3.utils.toWei('0.01', 'ether') });
  const sig = await w3.eth.personal.sign(w3.utils.utf8ToHex('hello from web3'), address, 'a password Sigil ignores');
  const signer = w3.eth.accounts.recover('hello from web3', sig);
  if (signer.toLowerCase() !== address.toLowerCase()) fail(`web3: personal.sign recovers to ${signer}`);
  return [{ hash: r.transactionHash, from: r.from, status: r.status === 1n ? 'success' : 'reverted' }];
}

try {
  const out = await { viem, ethers, web3 }[lib]();
  console.log(JSON.stringify(out));
} catch (e) {
  fail(`${lib}: ${e.shortMessage || e.message}`);
}
