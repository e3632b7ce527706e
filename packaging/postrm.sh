#!/bin/sh
# Sigil's postrm. A purge keeps /var/lib/sigil and /etc/sigil/credentials:
# the store is the only map from key IDs to HSM objects (and SoftHSM's
# tokens are there), so deleting it would strand every key.
set -e
if [ "$1" = purge ]; then
	echo "sigil: /var/lib/sigil (the keyring and SoftHSM tokens) and /etc/sigil/credentials are kept; remove them yourself once no key in them is needed" >&2
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
