# @summary The content of a configuration file with a `nats:` section:
#   Sensitive when `nats` holds a password.
#
# @api private
#
# A nats password is a secret: Sensitive content keeps it out of Puppet's
# diffs and reports. Without one, the content stays plain so that diffs show
# what changed.
#
# @param nats
#   The `nats:` parameter the content was rendered from.
# @param content
#   The rendered file.
#
# @return [Variant[String, Sensitive[String]]] content, wrapped when nats has a password.
function certsync::config_content(Certsync::Nats $nats, String $content) >> Variant[String, Sensitive[String]] {
  ('password' in $nats) ? {
    true    => Sensitive($content),
    default => $content,
  }
}
