#!/bin/sh
# Puts real footage for the pose tests and benchmarks into tests/.media/ (gitignored):
#   vtest.avi        795 frames, 768x576, ~10 fps, pedestrians seen from above
#   basketball1.png  still image with people
#   messi5.jpg       still image, one player
# They come from Debian's opencv-doc package (OpenCV's sample data, examples/data/).
# Idempotent: does nothing when all three files are already there. Needs apt-get and dpkg
# (Debian/Ubuntu); runs `apt-get update` only when the first download attempt fails, which
# needs root (as on CI).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
media="${POSESTREAM_MEDIA:-$here/.media}"
files="vtest.avi basketball1.png messi5.jpg"

missing=""
for f in $files; do
    [ -s "$media/$f" ] || missing="$missing $f"
done
if [ -z "$missing" ]; then
    echo "get_media: all files present in $media"
    exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
cd "$tmp"
# apt-get download writes into the current directory; as root it warns that it runs
# unsandboxed, which is harmless here.
if ! apt-get download opencv-doc >apt.log 2>&1; then
    echo "get_media: apt-get download failed; running apt-get update and retrying" >&2
    apt-get update >>apt.log 2>&1 || { cat apt.log >&2; echo "get_media: apt-get update failed (needs root and network)" >&2; exit 1; }
    apt-get download opencv-doc >>apt.log 2>&1 || { cat apt.log >&2; echo "get_media: cannot download opencv-doc" >&2; exit 1; }
fi
deb=$(ls opencv-doc_*.deb)
dpkg -x "$deb" extracted
src=extracted/usr/share/doc/opencv-doc/examples/data
mkdir -p "$media"
for f in $files; do
    if [ ! -s "$src/$f" ]; then
        # Debian may ship a file gzip-compressed in doc folders.
        if [ -s "$src/$f.gz" ]; then
            gzip -dc "$src/$f.gz" >"$src/$f"
        else
            echo "get_media: $f not found in $deb" >&2
            exit 1
        fi
    fi
    # copy then rename, so an interrupted run never leaves half a file under the final name
    cp "$src/$f" "$media/.$f.part"
    mv "$media/.$f.part" "$media/$f"
done
echo "get_media: from $deb ->$missing into $media"
