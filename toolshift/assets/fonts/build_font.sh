#!/usr/bin/env bash
# Rebuild toolshift/assets/fonts/FreeMonoBold.ttf from Debian's GNU FreeFont packages (see README.md).
#
# The result is Debian bookworm's FreeMonoBold.ttf (fonts-freefont-ttf 20120503-10: outlines, metrics,
# tables, unchanged) with TrueType hinting instructions added by FontForge's auto-instructor, driven by
# the PostScript stem hints and private dictionary (BlueValues, StdHW/StdVW, StemSnapH/V) that Debian's
# FreeMonoBold.otf of the same source package (fonts-freefont-otf 20120503-10) carries.
#
# Needs (Debian bookworm):  apt-get install fontforge-nox   (1:20230101~dfsg-1.1~deb12u1)
# Usage:                    bash toolshift/assets/fonts/build_font.sh [OUTPUT.ttf]
# The build is deterministic (SOURCE_DATE_EPOCH is fixed); the script checks every sha256 it relies on.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$HERE/FreeMonoBold.ttf}"
FREEFONT_VERSION=20120503-10
FONTFORGE_VERSION='1:20230101~dfsg-1.1~deb12u1'
TTF_SHA256=30b4b98748839431a366123f859871549b57e461a8b8ec2d3d65b55b2fb9f22d  # FreeMonoBold.ttf in fonts-freefont-ttf
OTF_SHA256=4ee1dc76a86df164ef6c1ef58c18d99cc2fe0b4000be11a384413f253791df52  # FreeMonoBold.otf in fonts-freefont-otf
RESULT_SHA256=b925e2e3d14123cc49bd00a8013f1c4f50f05428a71dca752bee7d2e5dd261f8

have="$(dpkg-query -W -f='${Version}' fontforge-nox 2>/dev/null || dpkg-query -W -f='${Version}' fontforge 2>/dev/null || true)"
if [ -z "$have" ]; then
    echo "fontforge is not installed: apt-get install fontforge-nox" >&2; exit 1
fi
[ "$have" = "$FONTFORGE_VERSION" ] || echo "warning: fontforge $have, the checked build used $FONTFORGE_VERSION" >&2

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
chmod 777 "$WORK"  # apt-get download runs as _apt where it can
apt-get download "fonts-freefont-ttf=$FREEFONT_VERSION" "fonts-freefont-otf=$FREEFONT_VERSION"
dpkg-deb -x "fonts-freefont-ttf_${FREEFONT_VERSION}_all.deb" ttf
dpkg-deb -x "fonts-freefont-otf_${FREEFONT_VERSION}_all.deb" otf
SRC_TTF=ttf/usr/share/fonts/truetype/freefont/FreeMonoBold.ttf
SRC_OTF=otf/usr/share/fonts/opentype/freefont/FreeMonoBold.otf
echo "$TTF_SHA256  $SRC_TTF" | sha256sum -c -
echo "$OTF_SHA256  $SRC_OTF" | sha256sum -c -

cat > instruct.py <<'EOF'
import sys
import fontforge

ttf_path, otf_path, out_path = sys.argv[1:4]
ttf = fontforge.open(ttf_path)
otf = fontforge.open(otf_path)
for key in otf.private:  # BlueValues, BlueShift, BlueFuzz, StdHW, StdVW, StemSnapH, StemSnapV, ForceBold
    ttf.private[key] = otf.private[key]
for glyph in ttf.glyphs():  # the OTF's PostScript stem hints, glyph by glyph (same glyph set and outlines)
    source = otf[glyph.glyphname]
    glyph.hhints = source.hhints
    glyph.vhints = source.vhints
ttf.selection.all()
ttf.autoInstr()
ttf.generate(out_path, flags=("opentype",))
EOF
# 2012-05-01 18:27:07 UTC, the font's own modification time (head.modified of the Debian TTF).
SOURCE_DATE_EPOCH=1335896827 fontforge -quiet -lang=py -script instruct.py "$SRC_TTF" "$SRC_OTF" FreeMonoBold.ttf

got="$(sha256sum FreeMonoBold.ttf | cut -d' ' -f1)"
if [ "$got" != "$RESULT_SHA256" ]; then
    echo "warning: result sha256 $got differs from the checked build $RESULT_SHA256" >&2
fi
cp FreeMonoBold.ttf "$OUT"
echo "wrote $OUT (sha256 $got)"
