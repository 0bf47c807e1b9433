"""SFTP: documents to and from a trading partner's SFTP server (the ``sftp`` adapter and transport kind)."""

from adapters.sftp.adapter import SftpAdapter
from adapters.sftp.transport import SftpTransport

__all__ = ["SftpAdapter", "SftpTransport"]
