# @summary The `nats:` section of node.yaml or publisher.yaml, checked as
#   certsync checks it.
#
# At most one of creds, nkey and user/password; user and password together;
# tls.cert and tls.key together. The password may be Sensitive; the caller
# writes the file as Sensitive content when there is one.
#
# @param nats
#   The section, under node.yaml's key names.
#
# @return [String] YAML lines, starting with `nats:`.
function certsync::nats_yaml(Certsync::Nats $nats) >> String {
  $auth = ['creds', 'nkey', 'user'].filter |$k| { $k in $nats }
  if length($auth) > 1 {
    fail("certsync: nats: give at most one of creds, nkey and user/password, not ${join($auth, ' and ')}")
  }
  if ('user' in $nats) != ('password' in $nats) {
    fail('certsync: nats: user and password go together')
  }
  $tls = $nats['tls'] ? {
    undef   => {},
    default => $nats['tls'],
  }
  if ('cert' in $tls) != ('key' in $tls) {
    fail('certsync: nats: tls.cert and tls.key go together')
  }
  $password = $nats['password'] ? {
    Sensitive => $nats['password'].unwrap,
    default   => $nats['password'],
  }
  $plain = ['url', 'creds', 'nkey', 'user'].filter |$k| { $k in $nats }.map |$k| {
    "  ${k}: ${certsync::yaml_string($nats[$k])}\n"
  }
  $secret = $password ? {
    String  => ["  password: ${certsync::yaml_string($password)}\n"],
    default => [],
  }
  $tls_lines = ['ca', 'cert', 'key'].filter |$k| { $k in $tls }.map |$k| {
    "    ${k}: ${certsync::yaml_string($tls[$k])}\n"
  }
  $tls_section = $tls_lines ? {
    []      => [],
    default => ["  tls:\n"] + $tls_lines,
  }
  join(["nats:\n"] + $plain + $secret + $tls_section, '')
}
