"""Names imported at module level by LeRobot; each is a class whose construction raises."""


def __getattr__(name):
    def unavailable(self, *args, **kwargs):
        raise RuntimeError(f"torchvision.transforms.{name} is not available in the oracle environment")

    return type(name, (), {"__init__": unavailable})
