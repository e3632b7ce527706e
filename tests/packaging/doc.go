// Package packaging tests the release artefacts as an operator gets
// them: `make release` builds the .deb, which is installed with dpkg into
// a fresh Debian root (debootstrap), where its postinst makes the token
// and the PKI and the installed binary serves with the packaged
// configuration, signs, and is verified with openssl.
package packaging
