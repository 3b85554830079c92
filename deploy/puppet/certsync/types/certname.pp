# @summary A certificate name: certbot's lineage name, as certsync accepts it.
#
# `^[A-Za-z0-9][A-Za-z0-9._-]*$`, at most 253 bytes, no `..`, not ending in `.`.
type Certsync::Certname = Pattern[/\A(?!.*\.\.)(?!.*\.\z)[A-Za-z0-9][A-Za-z0-9._-]{0,252}\z/]
