# @summary The folder holding a path: `/etc/letsencrypt/live` for
#   `/etc/letsencrypt/live/example.com`, `/` for `/srv`.
#
# @param path
#   A clean absolute path.
#
# @return [String] its parent folder.
function certsync::parent(Certsync::Absolutepath $path) >> String {
  $parent = $path.regsubst('/[^/]+\z', '')
  $parent ? {
    ''      => '/',
    default => $parent,
  }
}
