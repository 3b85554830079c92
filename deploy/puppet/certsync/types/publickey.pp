# @summary A trusted publisher: the public key line `certsync keygen signing`
#   printed, `certsync-ed25519:` and 44 characters of base64.
type Certsync::Publickey = Pattern[/\Acertsync-ed25519:[A-Za-z0-9+\/]{43}=\z/]
