using GpuExecutor.Workflows;

namespace GpuExecutor.Verbs;

/// <summary>`runs show RUN`: one run's whole story, read from the checkpoint store (<see cref="CheckpointAdmin.ShowRunAsync"/>).</summary>
public static class RunsVerb
{
    public static Task ShowAsync(VerbContext context, string run, TextWriter stdout) =>
        new CheckpointAdmin(context.Config, context.Adapters.Stores, stdout, context.Stop).ShowRunAsync(run);
}
