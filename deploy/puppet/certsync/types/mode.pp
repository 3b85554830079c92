# @summary An octal file mode as chmod reads it, such as `0644` or `640`.
#
# Which bits are allowed depends on the file: certsync::certificate refuses a
# cert_mode writable by group or others and a key_mode open to others.
type Certsync::Mode = Pattern[/\A0?[0-7]{3}\z/]
