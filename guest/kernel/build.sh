#!/bin/bash
# Builds the steelcup guest kernel (an uncompressed vmlinux booted through PVH) out of tree.
#   guest/kernel/build.sh SRC_DIR OBJ_DIR FRAGMENT OUT_VMLINUX
# Config = `allnoconfig` + FRAGMENT (scripts/kconfig/merge_config.sh -n). Kconfig silently drops
# an option whose dependencies are not met, so every line of FRAGMENT is checked against the
# resulting .config and the build fails listing the ones that did not stick.
set -euo pipefail
src=$(realpath "$1")
obj=$(realpath -m "$2")
fragment=$(realpath "$3")
out=$4
mkdir -p "$obj"

(cd "$src" && scripts/kconfig/merge_config.sh -n -O "$obj" "$fragment" >"$obj/merge_config.log" 2>&1) ||
	{ cat "$obj/merge_config.log" >&2; exit 1; }

missing=()
while IFS= read -r line; do
	if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
		want="${BASH_REMATCH[1]}=${BASH_REMATCH[2]}"
		got=$(grep -E "^${BASH_REMATCH[1]}=|^# ${BASH_REMATCH[1]} is not set" "$obj/.config" || true)
		[[ $got == "$want" ]] || missing+=("$want (got: ${got:-absent})")
	elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
		if got=$(grep -E "^${BASH_REMATCH[1]}=" "$obj/.config"); then
			missing+=("${BASH_REMATCH[1]} unset (got: $got)")
		fi
	fi
done <"$fragment"
if ((${#missing[@]})); then
	echo "guest kernel: these options of $3 did not end up as asked (unmet dependencies?):" >&2
	printf '  %s\n' "${missing[@]}" >&2
	exit 1
fi

start=$(date +%s)
make -s -C "$src" O="$obj" -j"$(nproc)" KBUILD_BUILD_USER=steelcup KBUILD_BUILD_HOST=steelcup vmlinux
echo "guest kernel: $(make -s -C "$src" O="$obj" kernelrelease) built in $(($(date +%s) - start)) s"
cp "$obj/vmlinux" "$out.tmp"
mv "$out.tmp" "$out"
