"""Storage primitives that the local engines share: private files and their names (`files`),
records framed against torn writes (`framing`), the one-owner lock (`locking`), damage
reports and backups (`recovery`), the engine's own thread (`thread`), telling a queue's
format from its files (`detect`) and reading the files of aiodiskqueue 0.1 (`legacy`)."""
