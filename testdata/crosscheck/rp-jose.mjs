// Usage: node rp-jose.mjs JWKS_URL MAJOR MAX_AGE_SECONDS
// A relying party on the jose package (MAJOR 5 or 6), configured as
// docs/relying-parties.md says: createRemoteJWKSet with cacheMaxAge at
// most the max-age Sigil sends. Reads compact JWTs, one per line, and
// answers each with "ok KID" or "fail REASON", keeping its cache between
// lines as a long-lived relying party does.
import { createInterface } from 'node:readline';

const [url, major, maxAge] = process.argv.slice(2);
const { createRemoteJWKSet, jwtVerify } = await import(major === '6' ? 'jose6' : 'jose');
const jwks = createRemoteJWKSet(new URL(url), { cacheMaxAge: Number(maxAge) * 1000, cooldownDuration: 1000 });
for await (const token of createInterface({ input: process.stdin })) {
  try {
    const { protectedHeader } = await jwtVerify(token, jwks, { clockTolerance: 5 });
    console.log(`ok ${protectedHeader.kid}`);
  } catch (e) {
    console.log(`fail ${e.code ?? ''} ${String(e.message).replaceAll('\n', ' ')}`);
  }
}
