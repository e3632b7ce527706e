#!/bin/sh
# deb-version.sh VERSION: a git describe version as a Debian version:
# v1.2.0 -> 1.2.0, v1.2.0-3-gabc -> 1.2.0+3.gabc, a bare commit -> 0.0.0+git.abc.
v=${1#v}
case "$v" in
[0-9]*.[0-9]*) ;;
*) v="0.0.0+git.$v" ;;
esac
echo "$v" | sed -e 's/-\([0-9][0-9]*\)-g/+\1.g/' -e 's/-dirty$/+dirty/' -e 's/-/~/g'
