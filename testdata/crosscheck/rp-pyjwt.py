"""Usage: python3 rp-pyjwt.py JWKS_URL MAX_AGE_SECONDS

A relying party on PyJWT (Debian's python3-jwt), configured as
docs/relying-parties.md says: PyJWKClient caching the JWK Set for at most
the max-age Sigil sends, and not caching keys by kid (cache_keys=True keeps
a revoked key for good). Reads compact JWTs, one per line, and answers each
with "ok KID" or "fail REASON", keeping its cache between lines.
"""
import sys

import jwt

url, max_age = sys.argv[1], int(sys.argv[2])
client = jwt.PyJWKClient(url, cache_keys=False, cache_jwk_set=True, lifespan=max_age)
for line in sys.stdin:
    token = line.strip()
    try:
        key = client.get_signing_key_from_jwt(token)
        jwt.decode(token, key.key, algorithms=["ES256", "ES384", "RS256", "PS256", "EdDSA", "ES256K"], options={"verify_aud": False}, leeway=5)
        print("ok", jwt.get_unverified_header(token)["kid"], flush=True)
    except Exception as e:  # every failure is an answer, not a crash
        print("fail", type(e).__name__, str(e).replace("\n", " "), flush=True)
