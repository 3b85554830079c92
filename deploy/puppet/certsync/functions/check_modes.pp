# @summary Refuses file modes certsync would refuse: a cert_mode writable by
#   group or others, a key_mode with any bit for others.
#
# Types cannot say which bits of an octal string are set (Puppet has no
# bitwise operators), so the last two digits are read here.
#
# @param where
#   What the settings belong to, for the error: `certificate "example.com"`.
# @param settings
#   A Certsync::Entry or Certsync::Settings hash.
#
# @return [Boolean] true; the function fails on a bad mode.
function certsync::check_modes(String $where, Hash $settings) >> Boolean {
  $cert_mode = $settings['cert_mode']
  if $cert_mode =~ String and $cert_mode !~ /[0145][0145]\z/ {
    fail("certsync: ${where}: cert_mode ${cert_mode} is writable by group or others")
  }
  $key_mode = $settings['key_mode']
  if $key_mode =~ String and $key_mode !~ /0\z/ {
    fail("certsync: ${where}: key_mode ${key_mode} is open to others")
  }
  true
}
