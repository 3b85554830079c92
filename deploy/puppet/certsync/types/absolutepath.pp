# @summary An absolute path certsync, systemd and Puppet all read the same way.
#
# At least one component below `/`; no `.` or `..` component, no `//`, no
# trailing `/`; letters, digits and `._+@=,:~-` only, so that it needs no
# quoting in node.yaml, in a unit's `ExecStart=` or `ReadWritePaths=`, and
# holds no systemd specifier (`%`).
type Certsync::Absolutepath = Pattern[/\A(\/(?!\.\.?(\/|\z))[A-Za-z0-9._+@=,:~-]+)+\z/]
