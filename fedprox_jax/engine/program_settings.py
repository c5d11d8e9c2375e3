"""What every run of one compiled program shares (its structure), as explicit values: the engine
reads these and never a config. What may differ between the runs is engine/run_settings.py's.

The experiment layer makes them from a config (experiment/settings.py) and says in `names` which
config field each setting is, so that the engine's refusals name what a user sets; a setting
missing from `names` is named as it is here.
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class ProgramSettings:
  algorithm: str  # A registered algorithm's name.
  model: str  # A model of tasks/models.py.
  model_options: tuple = ()  # (field, value) pairs: the model's sizes.
  server_optimizer: str = 'sgd'
  clients_per_round: int = 10
  local_epochs: int = 20  # E: the most epochs a client runs.
  batch_size: int = 10  # Requested; clamped to the largest client.
  num_lanes: int = 0  # 0 chooses from the devices.
  client_data: str = 'auto'  # Where the clients' data live: auto, replicated or per_round.
  eval_clients: int = 0  # Clients whose data an evaluation reads (0: all).
  eval_full_every: int = 0  # With eval_clients: every so many rounds evaluate all (0: never).
  eval_chunk: int = 0  # Examples per evaluation chunk (0: the model's own).
  eval_dissimilarity: bool = False  # Also the paper's gradient dissimilarity.
  eval_seed: int = 0  # Draws the clients each evaluation reads.
  aggregation: tuple = ()  # Names of the aggregation stages the program runs (aggregation/).
  names: tuple = ()  # (setting, its name in messages) pairs, for these and cpu_devices, data,

  #                    runs_per_chunk (the settings that messages advise on).

  def name(self, setting: str) -> str:
    """How messages name `setting`."""
    return dict(self.names).get(setting, setting)
