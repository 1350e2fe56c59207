from .schedule import NoiseSchedule

__all__ = ["NoiseSchedule"]
