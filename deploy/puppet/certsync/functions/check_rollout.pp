# @summary Refuses a rollout policy certsync would refuse, and canaries that
#   are not among the nodes they are chosen from.
#
# The rules a type cannot say: each canary is one of `members` and listed
# once; every wave releases at least 1%, each grows from the one before
# (they are cumulative), and the last is 100% (every node is released in the
# end); wave_deadline is positive.
#
# @param where
#   What the policy belongs to, for the error: `certsync::publisher rollout` or
#   `certificate "example.com": rollout`.
# @param rollout
#   The policy.
# @param members
#   The nodes a canary may name: certsync::publisher's nodes for the
#   default policy, the certificate's own nodes for its own policy.
# @param members_are
#   Those nodes, for the error: `certsync::publisher's nodes`.
#
# @return [Boolean] true; the function fails on a bad policy.
function certsync::check_rollout(
  String                   $where,
  Certsync::Rollout        $rollout,
  Array[Certsync::Nodename] $members,
  String                   $members_are,
) >> Boolean {
  $canary = $rollout['canary']
  if $canary =~ Array {
    $canary.each |$node| {
      unless $node in $members {
        fail("certsync: ${where}: canary \"${node}\" is not one of ${members_are}")
      }
    }
    if length($canary.unique) != length($canary) {
      fail("certsync: ${where}: a canary is listed twice")
    }
  }
  $waves = $rollout['waves'] ? {
    undef   => [],
    default => $rollout['waves'].map |$w| { Integer($w.regsubst('%', '')) },
  }
  $waves.each |$i, $w| {
    if $w < 1 {
      fail("certsync: ${where}: waves: a wave of ${w}% releases no node, want 1% to 100%")
    }
    if $i > 0 and $w <= $waves[$i - 1] {
      fail("certsync: ${where}: waves: ${w}% does not grow from ${waves[$i - 1]}%: waves are cumulative")
    }
  }
  if !$waves.empty and $waves[-1] != 100 {
    fail("certsync: ${where}: waves: the last wave is ${waves[-1]}%, want 100%: every node must be released in the end")
  }
  $deadline = $rollout['wave_deadline']
  if $deadline =~ String and $deadline !~ /[1-9]/ {
    fail("certsync: ${where}: wave_deadline ${deadline}: want a positive duration")
  }
  true
}
