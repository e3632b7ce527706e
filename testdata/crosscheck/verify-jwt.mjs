// Usage: node verify-jwt.mjs JWKS_URL TOKENS_FILE
// Verifies every token (one per line) against the JWK Set at JWKS_URL with
// the jose package, and prints "verified N" or exits 1 naming the first
// token that fails.
import { createLocalJWKSet, jwtVerify } from 'jose';
import { readFileSync } from 'node:fs';

const [url, file] = process.argv.slice(2);
const res = await fetch(url);
if (!res.ok) throw new Error(`GET ${url}: ${res.status}`);
const jwks = createLocalJWKSet(await res.json());
const tokens = readFileSync(file, 'utf8').split('\n').filter(Boolean);
let n = 0;
for (const token of tokens) {
  try {
    const { protectedHeader } = await jwtVerify(token, jwks, { clockTolerance: 5 });
    n++;
    console.error(`ok ${protectedHeader.alg} ${protectedHeader.kid}`);
  } catch (e) {
    console.error(`FAIL ${token.split('.')[0]}: ${e.code ?? ''} ${e.message}`);
    process.exit(1);
  }
}
console.log(`verified ${n}`);
