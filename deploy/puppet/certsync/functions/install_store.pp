# @summary The install store certsync keeps a certificate's versions in:
#   `<parent of install_dir>/.certsync`, shared by the certificates of one parent.
#
# @param install_dir
#   A certificate's install_dir.
#
# @return [String] the store's path.
function certsync::install_store(Certsync::Absolutepath $install_dir) >> String {
  "${certsync::parent($install_dir)}/.certsync".regsubst('\A//', '/')
}
