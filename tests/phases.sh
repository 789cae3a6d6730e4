# Sourced by tests/all and tests/quick: `phase NAME COMMAND...` runs a
# command as a named phase and prints how long it took; `phases_summary`
# prints every phase's time and the total (tests/all calls it on exit, so a
# failed run says what it spent too).
phase_lines=()
phases_started=$SECONDS

phase() {
	local name=$1 started=$SECONDS status=0
	shift
	echo "== phase: $name" >&2
	"$@" || status=$?
	local took=$((SECONDS - started))
	local line
	line=$(printf '%-52s %3dm%02ds' "$name" $((took / 60)) $((took % 60)))
	((status == 0)) || line+="  FAILED (exit $status)"
	phase_lines+=("$line")
	echo "== phase: $name took $((took / 60))m$((took % 60))s" >&2
	return "$status"
}

phases_summary() {
	local total=$((SECONDS - phases_started))
	((${#phase_lines[@]})) || return 0
	echo "== time spent per phase" >&2
	printf '   %s\n' "${phase_lines[@]}" >&2
	printf '   %-52s %3dm%02ds\n' "total" $((total / 60)) $((total % 60)) >&2
}
