#!/bin/sh
# Sigil's postinst: the sigil user and its folders; on a first install
# with SoftHSM, a token with a random PIN and the mTLS PKI, so the service
# starts with the packaged configuration. The first-install setup runs
# once (a marker records that it finished) and each of its steps only
# makes what is missing: an upgrade, or a rerun after a failure, never
# replaces a PIN, a certificate or a key.
set -e
[ "$1" = configure ] || exit 0

getent group sigil >/dev/null || groupadd --system sigil
getent passwd sigil >/dev/null || useradd --system --gid sigil --home-dir /var/lib/sigil --no-create-home \
	--shell /usr/sbin/nologin --comment "Sigil signing service" sigil
install -d -m 0700 -o sigil -g sigil /var/lib/sigil /var/lib/sigil/tokens /var/log/sigil
install -d -m 0700 -o root -g root /etc/sigil/credentials
install -d -m 0755 /etc/sigil/tls

marker=/var/lib/sigil/.installed
if [ -z "$2" ] && [ ! -e "$marker" ]; then
	export SOFTHSM2_CONF=/etc/sigil/softhsm2.conf CREDENTIALS_DIRECTORY=/etc/sigil/credentials
	if [ ! -e /usr/lib/softhsm/libsofthsm2.so ]; then
		echo "sigil: SoftHSM is not installed: configure your HSM in /etc/sigil/sigil.yaml (see /usr/share/doc/sigil/production.md)" >&2
		exit 0
	fi
	if [ ! -e /etc/sigil/credentials/pin ]; then
		# The PIN is in place only once its token is made with it.
		(umask 077; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > /etc/sigil/credentials/pin.new)
		sigil hsm init --module /usr/lib/softhsm/libsofthsm2.so --label sigil --pin file:/etc/sigil/credentials/pin.new
		mv /etc/sigil/credentials/pin.new /etc/sigil/credentials/pin
	fi
	names=localhost,127.0.0.1
	host=$(hostname)
	# A host name that is not a DNS name (build_host_01) cannot be certified.
	if printf '%s' "$host" | grep -Eq '^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$'; then
		names="$names,$host"
	fi
	[ -e /etc/sigil/tls/ca.crt ] || sigil pki init --config /etc/sigil/sigil.yaml --out /etc/sigil/tls/ca.crt
	if [ ! -e /etc/sigil/tls/server.crt ] && [ ! -e /etc/sigil/tls/server.key ]; then
		sigil pki issue --config /etc/sigil/sigil.yaml --server "$names" --out-dir /etc/sigil/tls
		chown sigil:sigil /etc/sigil/tls/server.key
	fi
	[ -e /etc/sigil/admin/client.crt ] || sigil pki issue --config /etc/sigil/sigil.yaml --client spiffe://localhost/admin --out-dir /etc/sigil/admin
	# What root made (the token's files, the store, the audit log) is the service's.
	chown -R sigil:sigil /var/lib/sigil /var/log/sigil
	touch "$marker"
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload
		systemctl enable --now sigil.service
	fi
	exit 0
fi

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload
	systemctl try-restart sigil.service # an upgrade restarts a running service; a stopped or disabled one stays so
fi
