"""The contracts that an engine keeps: `local` for a store that one queue owns, `shared` for
a store that several queues use at once. Subclass them to write an engine of your own."""
