#!/usr/bin/env bash
# Debian packages the demo and the tests use: real Fashion-MNIST (the embedded default dataset) and headless
# Chromium for the browser test. Where apt-get is not usable, say what to do instead and carry on.
set -u
need=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
[ -x /usr/bin/chromium ] || need+=(chromium chromium-driver)
[ ${#need[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null \
        && exit 0
fi
echo "note: could not install ${need[*]} with apt-get." >&2
echo "  Fashion-MNIST: download the four idx files and pass --set data.data_dir=DIR (or use data.dataset=digits)." >&2
echo "  Browser test: install Chromium at /usr/bin/chromium (it is skipped without it)." >&2
exit 0
