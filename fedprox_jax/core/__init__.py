"""The federated round's machinery, the same for every algorithm and task: cohort sampling and the
straggler model, the client objective and local step, lane packing and the lanes' loop, shuffles."""
