#!/bin/sh
# Sigil's postinst: the sigil user, its folders and, on a first install
# with SoftHSM, a token with a random PIN and the mTLS PKI, so the service
# starts with the packaged configuration. Nothing existing is replaced.
set -e
[ "$1" = configure ] || exit 0

getent group sigil >/dev/null || groupadd --system sigil
getent passwd sigil >/dev/null || useradd --system --gid sigil --home-dir /var/lib/sigil --no-create-home \
	--shell /usr/sbin/nologin --comment "Sigil signing service" sigil
install -d -m 0700 -o sigil -g sigil /var/lib/sigil /var/lib/sigil/tokens /var/log/sigil
install -d -m 0700 -o root -g root /etc/sigil/credentials
install -d -m 0755 /etc/sigil/tls

export SOFTHSM2_CONF=/etc/sigil/softhsm2.conf CREDENTIALS_DIRECTORY=/etc/sigil/credentials
if [ ! -e /etc/sigil/credentials/pin ]; then
	if [ -e /usr/lib/softhsm/libsofthsm2.so ]; then
		(umask 077; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > /etc/sigil/credentials/pin)
		sigil hsm init --module /usr/lib/softhsm/libsofthsm2.so --label sigil --pin file:/etc/sigil/credentials/pin
	else
		echo "sigil: SoftHSM is not installed: configure your HSM in /etc/sigil/sigil.yaml (see /usr/share/doc/sigil/production.md)" >&2
	fi
fi
if [ -e /etc/sigil/credentials/pin ] && [ ! -e /etc/sigil/tls/ca.crt ]; then
	sigil pki init --config /etc/sigil/sigil.yaml --out /etc/sigil/tls/ca.crt
	sigil pki issue --config /etc/sigil/sigil.yaml --server "localhost,127.0.0.1,$(hostname)" --out-dir /etc/sigil/tls
	sigil pki issue --config /etc/sigil/sigil.yaml --client spiffe://localhost/admin --out-dir /etc/sigil/admin
	chown sigil:sigil /etc/sigil/tls/server.key
fi
# What root made above (the token's files, the store, the audit log)
# belongs to the service.
chown -R sigil:sigil /var/lib/sigil /var/log/sigil

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload
	systemctl enable sigil.service >/dev/null
	systemctl restart sigil.service
fi
