// Usage: node eth-address.mjs 0xPRIVATEKEY
// Prints the address ethers derives from a secp256k1 private key.
import { Wallet } from 'ethers';

console.log(new Wallet(process.argv[2]).address);
