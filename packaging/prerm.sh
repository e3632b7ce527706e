#!/bin/sh
# Sigil's prerm: stop the service before its binary goes.
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
	systemctl disable --now sigil.service >/dev/null || true
fi
