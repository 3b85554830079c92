# @summary Where a certificate is installed: its install_dir, else certsync's
#   default `/etc/letsencrypt/live/<name>`.
#
# @param name
#   The certificate's name.
# @param settings
#   Its entry in certsync::node's certificates.
#
# @return [String] the install_dir certsync will use.
function certsync::install_dir(Certsync::Certname $name, Hash $settings) >> String {
  $settings['install_dir'] ? {
    String  => $settings['install_dir'],
    default => "/etc/letsencrypt/live/${name}",
  }
}
