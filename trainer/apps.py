from django.apps import AppConfig


class TrainerConfig(AppConfig):
    name = "trainer"
    verbose_name = "Datasets and training"

    def ready(self) -> None:
        from flux_studio.topics import owner_authorizer, register_topic
        from trainer.models import Dataset, TrainingJob

        register_topic("training", owner_authorizer(TrainingJob))
        register_topic("dataset", owner_authorizer(Dataset))
