# @summary Tells whether one of two clean absolute paths is the other or holds it.
#
# @param a
#   A path.
# @param b
#   Another path.
#
# @return [Boolean] true when a == b, a is under b, or b is under a.
function certsync::nested(Certsync::Absolutepath $a, Certsync::Absolutepath $b) >> Boolean {
  $a == $b or $a[0, length($b) + 1] == "${b}/" or $b[0, length($a) + 1] == "${a}/"
}
