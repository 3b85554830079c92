# @summary The `rollout:` key of publisher.yaml, at the top level or under a
#   certificate, as certsync reads it.
#
# Keys in certsync's order (canary, waves, soak, wave_deadline,
# max_failures); node names, percentages (`"25%"`) and durations quoted,
# max_failures as a number unless it is a percentage; `none` as `"none"`;
# an empty policy (certsync's defaults) as `{}`.
#
# @param rollout
#   The policy, or `none`.
# @param indent
#   The spaces before `rollout:`.
#
# @return [String] YAML lines, starting with `rollout:`.
function certsync::rollout_yaml(Variant[Certsync::Rollout, Enum['none']] $rollout, String $indent) >> String {
  if $rollout == 'none' {
    "${indent}rollout: \"none\"\n"
  } elsif $rollout.empty {
    "${indent}rollout: {}\n"
  } else {
    $lines = ['canary', 'waves', 'soak', 'wave_deadline', 'max_failures'].filter |$k| { $k in $rollout }.map |$k| {
      $v = $rollout[$k]
      $value = $v ? {
        Array   => "[${v.map |$item| { certsync::yaml_string($item) }.join(', ')}]",
        default => certsync::yaml_value($v),
      }
      "${indent}  ${k}: ${value}\n"
    }
    join(["${indent}rollout:\n"] + $lines, '')
  }
}
