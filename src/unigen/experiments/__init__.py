"""Jobs that combine families and the machinery: the `unigen demo` job and the rectified-flow chain. They may
import anything in unigen; nothing in unigen imports them but the CLI."""
