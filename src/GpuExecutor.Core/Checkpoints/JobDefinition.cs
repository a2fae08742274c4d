using System.Security.Cryptography;
using System.Text;
using GpuExecutor.Containers;

namespace GpuExecutor.Checkpoints;

/// <summary>
/// What a training job asked for, as re-attach compares it: the image, the GPU request, the
/// datasets and the checkpoint settings. Kept on the job container's labels, so a retry adopts
/// the orphaned training only when it asks for the same; a retry with a new image or other
/// datasets is a new training, not a continuation of the old one.
/// </summary>
public sealed record JobDefinition(string Image, string Gpus, string Datasets, string Checkpoints)
{
    private const string LabelPrefix = JobLabels.Prefix + "definition.";
    private const string ImageLabel = LabelPrefix + "image";
    private const string GpusLabel = LabelPrefix + "gpus";
    private const string DatasetsLabel = LabelPrefix + "datasets";
    private const string CheckpointsLabel = LabelPrefix + "checkpoints";

    /// <param name="datasetsDeclared">The job's DATASETS as written; kept as a hash, since it may be long.</param>
    public static JobDefinition Of(string image, Gpus.GpuRequest gpus, string? datasetsDeclared, CheckpointRequest checkpoints) => new(
        image,
        gpus.ToString(),
        string.IsNullOrWhiteSpace(datasetsDeclared) ? "none" : "sha256:" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(datasetsDeclared.Trim())))[..16],
        $"restore {(checkpoints.Restore ? checkpoints.PinnedGeneration?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "latest" : "off")}, continue {(checkpoints.Continue ? "on" : "off")}");

    public IReadOnlyDictionary<string, string> ToLabels() => new Dictionary<string, string>
    {
        [ImageLabel] = Image,
        [GpusLabel] = Gpus,
        [DatasetsLabel] = Datasets,
        [CheckpointsLabel] = Checkpoints,
    };

    /// <summary>
    /// How a running container's job differs from this one, one phrase per facet; empty when they
    /// match. A facet the container has no label for (started by an older executor) is not compared.
    /// </summary>
    public IReadOnlyList<string> DifferencesFrom(IReadOnlyDictionary<string, string> runningLabels)
    {
        var differences = new List<string>();
        Compare("image", ImageLabel, Image);
        Compare("GPU request", GpusLabel, Gpus);
        Compare("datasets (DATASETS)", DatasetsLabel, Datasets);
        Compare("checkpoint settings", CheckpointsLabel, Checkpoints);
        return differences;

        void Compare(string facet, string label, string wanted)
        {
            if (runningLabels.TryGetValue(label, out var running) && running != wanted)
                differences.Add($"{facet}: the training has {running}, this job asks for {wanted}");
        }
    }
}
