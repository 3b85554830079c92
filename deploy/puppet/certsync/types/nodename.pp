# @summary A node name, as certsync accepts it: `^[A-Za-z0-9][A-Za-z0-9_-]*$`,
#   at most 64 bytes.
type Certsync::Nodename = Pattern[/\A[A-Za-z0-9][A-Za-z0-9_-]{0,63}\z/]
